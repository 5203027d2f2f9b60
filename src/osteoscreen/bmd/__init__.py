"""BMD from the DenseNet regressor and category from the classifier."""
