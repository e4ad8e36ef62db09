"""Datasets: offline photo sets for codec training and evaluation."""
