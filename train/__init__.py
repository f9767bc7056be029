"""Supervised fine-tuning with TRL (+ DeepSpeed / PEFT) on the Magpie sets and the baselines."""
