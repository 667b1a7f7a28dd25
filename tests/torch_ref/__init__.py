"""PyTorch reference models written from the project's specifications (tests only)."""
