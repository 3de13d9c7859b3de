"""dynamics: Kubernetes-native CLIP pre-training with DynamiCS dynamic cluster-based data sampling."""

__version__ = "0.1.0"
