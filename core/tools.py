"""Tool calls: the tools a record offers, how each chat family writes a call, and whether a call fits its tool.

Tool-call data (Magpie issue #31) is MAGPIE with a tools list: the pre-query template is rendered with the tools in the
family's own tool format (Qwen's <tools> system block, Llama-3.1's "Given the following functions" user turn, gpt-oss's
developer `namespace functions`), so the model writes a request that needs them; the answer is rendered with the same
tools and its calls are parsed here into TRL's format, {"type": "function", "function": {"name", "arguments"}}, and
checked against the tool's JSON schema.

The formats, as the families' templates render a call (tests/test_tools.py renders each through the real template):

    hermes      <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   Qwen2.5, Qwen3, SmolLM3, Hermes
    llama3_json {"name": "f", "parameters": {...}}                           Llama-3.1/3.2/3.3/4 (after <|python_tag|>)
    mistral     [TOOL_CALLS] [{"name": "f", "arguments": {...}}]              Mistral-7B-v0.3
                [TOOL_CALLS]f[CALL_ID]id[ARGS]{...}  or  [TOOL_CALLS]f[ARGS]{...}   Mistral-Small-3.x, Magistral
    harmony     <|start|>assistant to=functions.f<|channel|>commentary json<|message|>{...}<|call|>   gpt-oss

A small parser per format rather than a library's: TRL's response templates (trl.chat_template_utils) recognise a chat
template only when it is byte-identical to TRL's own copy, know no Mistral format, and fall back to plain text on a
malformed call, so the reason a call is bad is lost; vLLM's tool parsers need vLLM (not installed on hf-only machines)
and a request object. The tests check these parsers against TRL's where TRL knows the template.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .reasoning import harmony_messages

FORMATS = ("hermes", "llama3_json", "mistral", "harmony")
# Why a call is dropped: the counts a responses stage reports (`tool_call_errors`).
ERRORS = ("bad_json", "unknown_tool", "missing_arguments", "wrong_type", "invalid_value", "unknown_argument")


# -- the tools ------------------------------------------------------------------------------------------------------
def _tool(obj, where: str) -> dict:
    """One tool as the chat templates and TRL take it: {"type": "function", "function": {name, description,
    parameters}}; a bare {name, parameters} function is wrapped."""
    fn = obj.get("function", obj) if isinstance(obj, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: a tool is {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": "
                         "{...}}}} (JSON schema of its arguments); this one has no name")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise ValueError(f"{where}: tool {fn['name']!r}: parameters must be a JSON schema of type object")
    return {"type": "function", "function": {**fn, "parameters": params}}


def load_tools(spec, shipped: Path | None = None) -> list[dict]:
    """The tools of a config's `tools` key: a JSON file (one tool or a list of them), a folder of such files, or a list
    of paths; a bare name is looked up in the folder `shipped` ("weather" -> <shipped>/weather.json; synth passes
    synth/data/tools). Tool names are unique."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec or [])
    tools: list[dict] = []
    for item in items:
        path = Path(item)
        if shipped and not path.exists() and not path.parent.name and (shipped / f"{path.stem}.json").exists():
            path = shipped / f"{path.stem}.json"
        if path.is_dir():
            files = sorted(path.glob("*.json"))
        elif path.is_file():
            files = [path]
        else:
            known = ", ".join(p.stem for p in sorted(shipped.glob("*.json"))) if shipped else "none"
            raise ValueError(f"tools: no such file or folder {item!r} (shipped tools: {known}; or give a JSON file)")
        for f in files:
            try:
                data = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"tools: {f} is not valid JSON ({e})") from None
            tools += [_tool(t, str(f)) for t in (data if isinstance(data, list) else [data])]
    names = [t["function"]["name"] for t in tools]
    if dups := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"tools: the name {dups[0]!r} is given twice; tool names must be unique")
    if not tools:
        raise ValueError(f"tools: {spec!r} holds no tool")
    return tools


# -- how a family writes a call -------------------------------------------------------------------------------------
SENTINEL_TOOL = "magpie_tool_probe"
SENTINEL_ARG = "magpie_arg_probe"


def probe_messages() -> tuple[list[dict], list[dict]]:
    """(tools, messages): a conversation whose answer is one call of a sentinel tool, to render through a template and
    see how it writes calls (the id is 9 letters and digits: Mistral's templates require that)."""
    tools = [{"type": "function", "function": {"name": SENTINEL_TOOL, "description": "probe", "parameters": {
        "type": "object", "properties": {SENTINEL_ARG: {"type": "string"}}, "required": [SENTINEL_ARG]}}}]
    call = {"id": "abcDEF123", "type": "function", "function": {"name": SENTINEL_TOOL, "arguments": {SENTINEL_ARG: "x"}}}
    return tools, [{"role": "user", "content": "probe"}, {"role": "assistant", "content": "", "tool_calls": [call]}]


def detect_format(rendered_call: str | None, chat_template: str) -> str | None:
    """The tool-call format of a family from its template's rendering of a call (or, where the template drops calls,
    as SmolLM3's does, from the template's text); None for a template without tools."""
    for text in (rendered_call or "", chat_template or ""):
        if "<tool_call>" in text:
            return "hermes"
        if "to=functions." in text or ("to=" in text and "<|channel|>" in text and "functions" in text):
            return "harmony"
        if "[TOOL_CALLS]" in text:
            return "mistral"
        if re.search(r'"name":\s*"[^"]*",\s*"parameters"', text) or ('"parameters": ' in text and "tool_call" in text):
            return "llama3_json"
    return None


@dataclass(frozen=True)
class Call:
    """A call as the model wrote it: its name and its arguments (a mapping), or the reason it cannot be read."""
    name: str | None
    arguments: dict | None
    error: str | None = None  # bad_json: the call's JSON does not parse or is no object with a name

    def trl(self) -> dict:
        """The call in TRL's messages format, arguments as JSON text (the OpenAI API's; export turns them back into
        objects, synth/export.py)."""
        return {"type": "function", "function": {"name": self.name, "arguments": json.dumps(self.arguments,
                                                                                            ensure_ascii=False)}}


def _from_json(text: str, key: str = "arguments") -> Call:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return Call(None, None, "bad_json")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return Call(None, None, "bad_json")
    args = obj.get(key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return Call(obj["name"], None, "bad_json")
    return Call(obj["name"], args, None if isinstance(args, dict) else "bad_json")


def _json_objects(text: str):
    """The top-level JSON values of `text` one after the other (Llama writes calls as bare objects, `;`-separated
    when parallel): (value or None, the text it spans)."""
    decoder, i = json.JSONDecoder(), 0
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n;,":
            i += 1
        if i >= len(text):
            return
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            yield None, text[i:]
            return
        yield obj, text[i:end]
        i = end


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_MISTRAL_ARGS = re.compile(r"\[TOOL_CALLS\]\s*(?P<name>[^\[\s]+)\s*(?:\[CALL_ID\]\s*[^\[]*)?\[ARGS\]", re.S)


def parse(text: str, fmt: str | None) -> tuple[str, list[Call]]:
    """(what the answer says besides its calls, the calls) of an answer in format `fmt`. The reasoning is already
    gone (core.reasoning.split), except for Harmony, whose calls live in their own channel of the raw answer."""
    if fmt is None or not text:
        return text, []
    if fmt == "hermes":
        calls = [_from_json(m.group(1)) for m in _HERMES.finditer(text)]
        return _HERMES.sub("", text).strip(), calls
    if fmt == "harmony":  # a call is a message to the recipient functions.<name>, its body the arguments' JSON
        calls = []
        for m in harmony_messages(text):
            if (m.recipient or "").startswith("functions."):
                try:
                    args = json.loads(m.body)
                except json.JSONDecodeError:
                    args = None
                name = m.recipient[len("functions."):]
                calls.append(Call(name, args, None if isinstance(args, dict) else "bad_json"))
        return text, calls
    if fmt == "mistral":
        at = text.find("[TOOL_CALLS]")
        if at < 0:
            return text, []
        content, rest = text[:at].strip(), text[at:]
        if _MISTRAL_ARGS.match(rest):  # name[ARGS]{...}, repeated
            calls = []
            for m in _MISTRAL_ARGS.finditer(rest):
                body = rest[m.end():]
                obj = next(_json_objects(body), (None, body))[0]
                calls.append(Call(m["name"], obj, None) if isinstance(obj, dict) else Call(m["name"], None, "bad_json"))
            return content, calls
        body = rest[len("[TOOL_CALLS]"):]
        value = next(_json_objects(body), (None, body))[0]
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
        if items is None:
            return content, [Call(None, None, "bad_json")]
        return content, [_from_json(json.dumps(v)) if isinstance(v, dict) else Call(None, None, "bad_json")
                         for v in items]
    if fmt == "llama3_json":
        # A call is the whole answer: JSON with "name" and "parameters" (the template has no room for text beside
        # it); an answer that is not such JSON is a plain answer.
        body = text.strip().removeprefix("<|python_tag|>").removeprefix("<|python_start|><|python_end|>").strip()
        if not body.startswith("{") or '"name"' not in body or not ('"parameters"' in body or '"arguments"' in body):
            return text, []  # JSON that names no arguments is an answer (asked for JSON, say), not a call
        calls = []
        for obj, span in _json_objects(body):
            calls.append(_from_json(span, "parameters") if obj is not None else Call(None, None, "bad_json"))
        return "", calls
    raise ValueError(f"unknown tool-call format {fmt!r}; choose one of {', '.join(FORMATS)}")


# -- does a call fit its tool ---------------------------------------------------------------------------------------
_REASONS = {"required": "missing_arguments", "type": "wrong_type", "additionalProperties": "unknown_argument"}


def check(call: Call, tools: list[dict]) -> str | None:
    """Why `call` does not fit `tools` (one of ERRORS), or None: its tool exists and its arguments satisfy the tool's
    JSON schema (jsonschema's validator: required arguments, types, enums, ranges)."""
    import jsonschema

    if call.error:
        return call.error
    tool = next((t["function"] for t in tools if t["function"]["name"] == call.name), None)
    if tool is None:
        return "unknown_tool"
    schema = tool.get("parameters") or {"type": "object"}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(call.arguments), key=lambda e: e.path)
    return _REASONS.get(errors[0].validator, "invalid_value") if errors else None
