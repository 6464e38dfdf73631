"""The promotion worker: turns promotion requests into models Triton serves."""
