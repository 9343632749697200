"""ActionGen: diverse stochastic 2D human-action generation with smooth latent transitions."""
__version__ = "0.1.0"
