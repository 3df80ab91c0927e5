"""Prompt templates: synthesize one from an intent, compile, render per unit, validate at create time.

Other layers import from here only; `render` and `synthesize` are implementation modules.
"""

from agentic_batch.prompts.render import (
    ENVIRONMENT,
    compile_template,
    referenced_fields,
    render,
    render_value,
    template_context,
    validate,
)
from agentic_batch.prompts.synthesize import synthesize

__all__ = [
    "ENVIRONMENT",
    "compile_template",
    "referenced_fields",
    "render",
    "render_value",
    "synthesize",
    "template_context",
    "validate",
]
