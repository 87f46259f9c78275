"""serveprof: profile TensorFlow models the way TensorFlow Serving serves them."""

__version__ = "0.1.0"
