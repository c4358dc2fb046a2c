"""Class-balanced augmentation: the synthetic rows each class needs to reach a target, drawn class by class."""
