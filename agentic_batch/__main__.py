"""`python -m agentic_batch ...` is the same as `abp ...`; the detached executor is started this way."""

from agentic_batch.cli import main

if __name__ == "__main__":
    main()
