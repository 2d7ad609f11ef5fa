"""Data for the paper's experiments: CIFAR-10 (Sec. 4.2), decoded once into uint8 tensors."""
