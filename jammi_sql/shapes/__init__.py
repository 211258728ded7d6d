"""The trainable shapes: the projection head and LoRA adapters."""
