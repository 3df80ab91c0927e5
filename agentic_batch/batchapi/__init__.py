"""Provider batch APIs (`--batch-api`): OpenAI Batch and Anthropic Message Batches, billed at half price.

`provider.py` is the contract between the engine's batch loop and each provider; `openai_batch.py` and
`anthropic_batch.py` implement it with the official SDKs.
"""
