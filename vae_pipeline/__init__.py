"""vae-pipeline: distributed batch data augmentation with variational autoencoders."""

__version__ = "0.1.0"
