"""Curriculum data path of the trainer."""
