"""The prompts layer: strict sandboxed rendering, readable errors, literal braces, synthesis."""

from __future__ import annotations

import pytest

from agentic_batch.errors import PromptError
from agentic_batch.prompts import (
    compile_template,
    referenced_fields,
    render,
    render_value,
    synthesize,
    template_context,
    validate,
)

PAYLOAD = {"id": 7, "name": "Ada", "body": "hello", "a b": "spaced"}
ODD_FIELDS = ["id", 'a "b"', "c\\d", "{{x}}", "x\ny", "😀"]
TRICKY_INTENT = "Label it {{ label }} {% endraw %} then {%- endraw -%} and {% raw %} {#3} {## ##} }}"


# --- rendering ---------------------------------------------------------------------------------


def test_renders_top_level_fields_row_item_and_subscripts() -> None:
    source = "{{ name }}|{{ row.name }}|{{ item.id }}|{{ row['a b'] }}|{{ item[\"a b\"] }}"
    assert render(source, PAYLOAD) == "Ada|Ada|7|spaced|spaced"


def test_keeps_trailing_newline_and_no_html_escaping() -> None:
    assert render("<{{ name }}> & co\n", {"name": "<b>"}) == "<<b>> & co\n"


def test_context_precedence_payload_over_aliases_extra_over_all() -> None:
    payload = {"row": "the row column", "x": 1}
    context = template_context(payload, x=2, unit={"id": 3})
    assert context["row"] == "the row column"
    assert context["item"] is payload
    assert context["x"] == 2
    assert render("{{ row }} / {{ item.x }} / {{ x }} / {{ unit.id }}", payload, x=2, unit={"id": 3}) == (
        "the row column / 1 / 2 / 3"
    )


def test_filters() -> None:
    payload = {"path": "/a/b/c.txt", "data": {"k": "<é>", "n": [1, 2]}}
    assert render("{{ path | basename }} {{ path | dirname }}", payload) == "c.txt /a/b"
    assert render("{{ data | tojson }}", payload) == '{\n  "k": "<é>",\n  "n": [\n    1,\n    2\n  ]\n}'
    assert render("{{ data | tojson(None) }}", payload) == '{"k": "<é>", "n": [1, 2]}'
    assert render("{{ name | truncate(5) }}", {"name": "abcdefghijkl"}) == "ab..."


def test_compile_is_cached() -> None:
    assert compile_template("cached {{ x }}") is compile_template("cached {{ x }}")


# --- literal braces ------------------------------------------------------------------------------


def test_json_braces_in_prose_render_literally() -> None:
    source = 'Return JSON like {"label": "x"} for {{ name }}'
    assert render(source, PAYLOAD) == 'Return JSON like {"label": "x"} for Ada'


def test_hash_brace_is_text_not_a_comment() -> None:
    assert (
        render("fixes issue {#3} and {# not a comment #}", {}) == "fixes issue {#3} and {# not a comment #}"
    )


def test_comments_use_double_hash() -> None:
    assert render("a{## dropped ##}b", {}) == "ab"


def test_raw_block_for_literal_jinja() -> None:
    assert render("{% raw %}{{ name }}{% endraw %} = {{ name }}", PAYLOAD) == "{{ name }} = Ada"


# --- errors ------------------------------------------------------------------------------------


def test_missing_field_names_reference_and_lists_fields() -> None:
    with pytest.raises(PromptError) as info:
        render("Title:\n{{ row.title }}", {"id": 1, "name": "n", "body": "b"})
    message = info.value.message
    assert message == (
        "prompt template uses 'row.title' but the item has no field 'title' (fields: id, name, body)"
    )
    assert "line 2" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("source", "reference"),
    [
        ("{{ title }}", "'title'"),
        ("{{ item['title'] }}", "'item[\"title\"]'"),
        ("{% if row.title %}{% endif %}", "'row.title'"),
    ],
)
def test_missing_field_other_spellings(source: str, reference: str) -> None:
    with pytest.raises(PromptError) as info:
        render(source, PAYLOAD)
    assert f"uses {reference}" in info.value.message
    assert "fields: id, name, body, a b" in info.value.message


def test_missing_nested_key_names_the_parent() -> None:
    with pytest.raises(PromptError) as info:
        render("{{ unit.nope }}", PAYLOAD, unit={"id": 1})
    assert info.value.message == "prompt template uses 'unit.nope' but unit has no key 'nope' (keys: id)"


def test_optional_fields_can_be_guarded() -> None:
    assert render("[{{ title | default('-') }}]{% if title is defined %}x{% endif %}", PAYLOAD) == "[-]"


def test_syntax_error_has_line_number_and_raw_hint() -> None:
    with pytest.raises(PromptError) as info:
        compile_template("line one\nline two\nbad {{ } here")
    assert info.value.message.startswith("prompt template line 3: ")
    assert "\n" not in info.value.one_line()
    assert "{% raw %}" in (info.value.hint or "")


def test_syntax_error_uses_what() -> None:
    with pytest.raises(PromptError, match=r"^reduce prompt line 1: "):
        compile_template("{% for %}", what="reduce prompt")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ row.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_python_internals(source: str) -> None:
    with pytest.raises(PromptError) as info:
        render(source, PAYLOAD)
    assert "sandbox" in info.value.message or "uses" in info.value.message


def test_dunder_access_reports_sandbox() -> None:
    with pytest.raises(PromptError, match="sandbox forbids.*__class__"):
        render("{{ ''.__class__.__mro__ }}", {})


def test_other_render_errors_become_prompt_errors() -> None:
    with pytest.raises(PromptError, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}", {})
    with pytest.raises(PromptError):
        render("{% include 'other.txt' %}", {})


# --- validate and referenced_fields ---------------------------------------------------------------


def test_validate_returns_previews() -> None:
    previews = validate("Hi {{ name }}", [{"name": "a"}, {"name": "b"}], unit={"id": 1})
    assert previews == ["Hi a", "Hi b"]


def test_validate_names_failing_item_index_and_key() -> None:
    payloads = [{"name": "a"}, {"name": "b"}, {"other": 1}]
    with pytest.raises(PromptError) as info:
        validate("Hi {{ name }}", payloads)
    assert "item #2" in info.value.message
    assert "uses 'name'" in info.value.message
    with pytest.raises(PromptError, match=r"item #2, key 'k3'"):
        validate("Hi {{ name }}", payloads, keys=["k1", "k2", "k3"])
    with pytest.raises(PromptError, match=r"item #0, key '/x.txt'"):
        validate("{{ size }}", [{"path": "/x.txt"}])


def test_validate_syntax_error_uses_what() -> None:
    with pytest.raises(PromptError, match=r"^reduce prompt line 1"):
        validate("{{ }", [{}], what="reduce prompt")


def test_referenced_fields() -> None:
    source = "{{ name }} {{ row.body }} {% for t in tags %}{{ t }}{% endfor %} {% set z = 1 %}{{ z }}"
    assert referenced_fields(source) == {"name", "row", "tags"}
    with pytest.raises(PromptError, match="line 1"):
        referenced_fields("{{ }")


# --- synthesize --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["files", "csv", "json", "jsonl", "sql", "python"])
def test_synthesize_is_deterministic(kind: str) -> None:
    fields = ["path", "relpath", "size"] if kind == "files" else ODD_FIELDS
    assert synthesize("Fix typos", kind, fields) == synthesize("Fix typos", kind, list(fields))


def test_synthesized_files_prompt_renders() -> None:
    template = synthesize("Fix the typos in comments.", "files", ["path", "relpath", "size"])
    out = render(template, {"path": "/repo/src/a.py", "relpath": "src/a.py", "size": 120})
    assert "\nFix the typos in comments.\n" in out
    assert "/repo/src/a.py" in out and "src/a.py" in out and "120 bytes" in out
    assert "one worker of many" in out
    assert "only on this file" in out and "in place" in out
    assert "FAILED:" in out


def test_synthesized_files_prompt_with_only_path() -> None:
    template = synthesize("Summarise.", "files", [])
    assert "{{ path }}" in template
    assert "/x" in render(template, {"path": "/x"})


def test_synthesized_record_prompt_handles_odd_column_names() -> None:
    template = synthesize("Classify the record.", "csv", ODD_FIELDS)
    payload = {name: f"value{i}" for i, name in enumerate(ODD_FIELDS)}
    out = render(template, payload)
    assert "- id: value0" in out
    assert '- a "b": value1' in out
    assert "- c\\d: value2" in out
    assert "- {{x}}: value3" in out
    assert "- x y: value4" in out
    assert "- 😀: value5" in out
    assert "FAILED:" in out and "no preamble" in out


def test_synthesized_record_prompt_with_row_and_item_columns() -> None:
    fields = ["row", "title"]
    out = render(synthesize("Do it.", "jsonl", fields), {"row": 3, "title": "T"})
    assert "- row: 3" in out and "- title: T" in out
    out = render(
        synthesize("Do it.", "jsonl", ["row", "item", "true", "ok"]),
        {"row": 1, "item": 2, "true": 3, "ok": 4},
    )
    assert "- row: 1" in out and "- item: 2" in out and "- ok: 4" in out


def test_synthesized_record_prompt_without_fields_dumps_json() -> None:
    template = synthesize("Do it.", "python", [])
    out = render(template, {"a": "<x>", "b": [1]})
    assert '"a": "<x>"' in out


@pytest.mark.parametrize("kind", ["files", "csv"])
def test_intent_with_jinja_syntax_renders_literally(kind: str) -> None:
    fields = ["path"] if kind == "files" else ["id"]
    template = synthesize(TRICKY_INTENT, kind, fields)
    out = render(template, {"path": "/p", "id": 1})
    assert f"\n{TRICKY_INTENT}\n" in out


@pytest.mark.parametrize("intent", ["{{%", "{%", "{", "a{%raw%}b", "{%- endraw %}x{{", "{## c ##}"])
def test_intent_edge_cases_render_literally(intent: str) -> None:
    assert f"\n{intent}\n" in render(synthesize(intent, "json", ["id"]), {"id": 1})


def test_synthesize_rejects_empty_intent_and_unknown_kind() -> None:
    with pytest.raises(PromptError):
        synthesize("   ", "csv", ["a"])
    with pytest.raises(PromptError):
        synthesize("x", "parquet", ["a"])


# --- bounds on what a template may build ------------------------------------------------------------

BIG = "{% set s = 'a' * 1000000 %}"


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{{ 'a' * 100000000 }}", "repeating a str would be 100,000,000 characters"),
        ("{{ ['a'] * 100000000 }}", "repeating a list"),
        (BIG + "{% set s = s ~ s ~ s ~ s ~ s %}", "joining values with ~"),
        (BIG + "{% set s = s + s + s + s + s %}", "joining two values with +"),
        ("{{ '%100000000d' % 1 }}", "%-format width"),
        ("{{ '%*d' % (100000000, 1) }}", "%-format width"),
        ("{{ '%100000000d' | format(1) }}", "%-format width"),
        ("{{ '{:>100000000}'.format(1) }}", "format width"),
        ("{{ '{0:{1}}'.format(1, 100000000) }}", "format width"),
        ("{{ 'a'.ljust(100000000) }}", "str.ljust()"),
        ("{{ 'a' | center(100000000) }}", "center filter"),
        ("{{ name | indent(100000000) }}", "indent filter"),
        (BIG + "{{ s | replace('a', 'aaaaaaaaaa') }}", "replaced text"),
        (BIG + "{{ s.replace('a', 'aaaaaaaaaa') }}", "replaced text"),
        (BIG + "{{ [s, s, s, s, s] | join }}", "joined text"),
        (BIG + "{{ [s, s, s, s, s] }}", "a value in {{ }}"),
        (BIG + "{{ [s, s, s, s, s] | tojson }}", "tojson filter"),
        ("{{ range(10) | slice(100000000) | list }}", "slice filter's slices"),
        ("{{ range(10) | batch(100000000, 0) | list }}", "batch filter's linecount"),
        ("{{ 2 ** 100000000 }}", "too large a number"),
        ("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) or '' }}{% endfor %}", "grown by .extend()"),
        ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "loops more than"),
        ("{% for a in range(100000) %}" + "x" * 100 + "{% endfor %}", "the rendered text would be"),
        ("{% macro m() %}{% for i in range(100000) %}" + "x" * 100 + "{% endfor %}{% endmacro %}{% set x = m() %}",
         "block or macro"),
    ],
)
def test_templates_cannot_build_huge_text(source: str, needle: str) -> None:
    """Each of these once built hundreds of megabytes (or ran for minutes); now refused before building."""
    with pytest.raises(PromptError) as info:
        render(source, PAYLOAD)
    assert needle in info.value.message, info.value.message
    assert "ABP_MAX_PROMPT_CHARS" in info.value.one_line()


def test_render_time_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recursive loop that never outputs nor grows anything still stops at the deadline."""
    monkeypatch.setenv("ABP_RENDER_SECONDS", "0.3")
    source = "{% for x in range(3) recursive %}{% if loop.depth < 40 %}{{ loop(range(3)) }}{% endif %}{% endfor %}"
    with pytest.raises(PromptError, match=r"took more than 0.3 s to render \(limit ABP_RENDER_SECONDS\)"):
        render(source, {})


def test_size_limit_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_MAX_PROMPT_CHARS", "100")
    with pytest.raises(PromptError, match=r"a value in \{\{ \}\} would be 150 characters"):
        render("{{ body }}", {"body": "x" * 150})
    monkeypatch.setenv("ABP_MAX_PROMPT_CHARS", "1000")
    assert render("{{ body }}", {"body": "x" * 150}) == "x" * 150


def test_ordinary_templates_keep_working_under_the_guards() -> None:
    source = (
        "{% for k, v in item | dictsort %}{{ loop.index }}/{{ loop.length }} {{ k }}={{ v }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}|{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ name ~ '!' }}"
        "|{{ '%5s' % 'x' }}|{{ '{:>4}'.format(id) }}|{{ body | center(9) }}|{{ [name, body] | join('+') }}"
        "|{{ 2 ** 10 }}|{% for c in 'ab' %}{{ c }}{% else %}none{% endfor %}"
        "|{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{{ range(5) | batch(2) | list }}"
    )
    assert render(source, {"id": 7, "name": "Ada", "body": "hello"}) == (
        "1/3 body=hello, 2/3 id=7, 3/3 name=Ada|ababab|[1, 1]|Ada!|    x|   7|  hello  |Ada+hello"
        "|1024|ab|empty|[[0, 1], [2, 3], [4]]"
    )


def test_abp_create_refuses_a_huge_template_in_one_line(tmp_path, orch) -> None:  # type: ignore[no-untyped-def]
    """The reported case, end to end: `abp create` exits at once with one line, and creates no job."""
    from tests.fixtures.abp import abp

    (tmp_path / "d.csv").write_text("name\nAda\n")
    result = abp("create", "--name", "huge", "--csv", "d.csv", "--command", "cat",
                 "--prompt", "{{ 'a' * 100000000 }}", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "100,000,000 characters" in lines[0], result.stderr
    assert orch.list_jobs() == []


def test_render_value_keeps_the_type_of_one_expression() -> None:
    """The mcp worker's arguments: `"{{ n }}"` sends 3, not "3"; anything else is text."""
    payload = {"n": 3, "tags": ["a", 1], "path": 'a "b".txt', "ok": True}
    assert render_value("{{ n }}", payload) == 3
    assert render_value("{{n}}", payload) == 3
    assert render_value("{{ tags }}", payload) == ["a", 1]
    assert render_value("{{ ok }}", payload) is True
    assert render_value("{{ path }}", payload) == 'a "b".txt'
    assert render_value("{{ n * 2 }}", payload) == 6
    assert render_value("{{ missing | default(none) }}", payload) is None
    assert render_value("{{ item }}", payload) == payload
    assert render_value("n={{ n }}", payload) == "n=3"
    assert render_value(" {{ n }}", payload) == " 3"
    assert render_value("{{ n }}{{ n }}", payload) == "33"
    assert render_value("{% if ok %}{{ n }}{% endif %}", payload) == "3"
    with pytest.raises(PromptError, match="arguments value 'x' uses 'nope' but the item has no field 'nope'"):
        render_value("{{ nope }}", payload, what="arguments value 'x'")
    with pytest.raises(PromptError, match="sandbox forbids"):
        render_value("{{ n.__class__.__mro__ }}", payload)
