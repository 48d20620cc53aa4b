"""Files: uploaded batch inputs and the result files batches produce."""
