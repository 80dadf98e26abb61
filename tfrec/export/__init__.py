"""Export: versioned SavedModels for TensorFlow Serving, checked before they count."""
