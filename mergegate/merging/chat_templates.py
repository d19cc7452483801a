"""Named chat templates a recipe may ask for (``chat_template: llama3``), and the template rule.

mergekit 0.1.5 ships five named templates (arcee-ai/mergekit mergekit/_data/chat_templates/:
alpaca, chatml, exaone, llama3, mistral) and picks one when ``chat_template`` is a short name
(under 256 characters, no newline, no ``{``); any other value must be a literal Jinja template
(at least 20 characters, with a ``{``), or ``auto`` (the most common template among the inputs)
— see mergekit/merge.py ``_set_chat_template``. Anything else is an invalid template.

The templates below are mergegate's own text, written from what mergekit's templates render
under transformers' chat-template environment (``trim_blocks`` and ``lstrip_blocks`` on): the
rendering — whitespace quirks included — is identical for every conversation, which
``tests/merging/test_chat_templates.py`` checks against mergekit's files. The output tokenizer
therefore renders prompts exactly as mergekit's would, though the template text differs.
"""

from __future__ import annotations

from enum import Enum

# <|im_start|>role\ncontent<|im_end|>\n per message
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# bos on the first turn; every turn is followed by a newline (mergekit's template prints one)
LLAMA3 = (
    "{% for message in messages %}"
    "{{ (bos_token if loop.first else '') + '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# the last system message first, then "### <Header>:\n<content>" blocks separated by blank lines;
# other roles print nothing; the generation prompt follows the last block without a separator
ALPACA = (
    "{% set system = messages | selectattr('role', 'equalto', 'system') | list %}"
    "{{ ((system | last).content | trim if system else '') + '\\n\\n' }}"
    "{% set headers = {'user': '### Instruction:', 'assistant': '### Response:', 'user_context': '### Input:'} %}"
    "{% for message in messages %}{% if message['role'] in headers %}"
    "{{ headers[message['role']] + '\\n' + message['content'] | trim }}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '### Response:\\n' }}{% endif %}"
)

# mergekit's exaone template indents its expressions; the indentation is part of its output
EXAONE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{{ '        [|system|][|endofturn|]\\n\\n' }}{% endif %}"
    "{{ '    [|' + message['role'] + '|]' + message['content'] + '\\n' }}"
    "{% if message['role'] == 'user' %}{{ '        \\n\\n' }}{% else %}{{ '        [|endofturn|]\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '    [|assistant|]\\n' }}{% endif %}"
)

_ALTERNATE = "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
_ROLES = "Only user and assistant roles are supported, with the exception of an initial optional system message!"
MISTRAL = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('" + _ALTERNATE + "') }}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ ' [INST] ' + (system_message + '\\n\\n' if loop.first and system_message is defined else '')"
    " + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('" + _ROLES + "') }}{% endif %}"
    "{% endfor %}"
)

NAMED: dict[str, str] = {"alpaca": ALPACA, "chatml": CHATML, "exaone": EXAONE, "llama3": LLAMA3,
                         "mistral": MISTRAL}


class TemplateKind(str, Enum):
    AUTO = "auto"  # the most common template among the inputs
    NAMED = "named"
    LITERAL = "literal"


def looks_like_name(value: str) -> bool:
    """mergekit's test for "this is a template name, not a template"."""
    return len(value) < 256 and "\n" not in value and "{" not in value


def classify(value: str) -> TemplateKind:
    """What a recipe's ``chat_template`` is.

    Raises:
        ValueError: neither ``auto``, a named template nor a literal template (mergekit raises
            "Invalid chat template" for these, but only after merging every tensor).
    """
    if value == "auto":
        return TemplateKind.AUTO
    if looks_like_name(value) and value in NAMED:
        return TemplateKind.NAMED
    if len(value) < 20 or "{" not in value:
        raise ValueError(f"invalid chat template {value!r}: not 'auto', not one of the named templates "
                         f"({', '.join(sorted(NAMED))}) and not a Jinja template (at least 20 characters "
                         "with '{')")
    return TemplateKind.LITERAL


def syntax_problem(template: str) -> str | None:
    """A Jinja syntax error in a literal template, or None. mergekit writes such templates as they
    are (transformers fails only when the template is rendered), so this is a warning."""
    import jinja2

    try:
        jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
                           extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


__all__ = ["NAMED", "CHATML", "TemplateKind", "classify", "looks_like_name", "syntax_problem"]
