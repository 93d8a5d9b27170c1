"""The soak in the normal suite (short)."""
