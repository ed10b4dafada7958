"""Inference servers (vLLM, OpenAI-compatible) and the client shared by datagen and evalkit."""
