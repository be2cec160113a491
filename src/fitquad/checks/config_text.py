"""The config as text: YAML read strictly (no duplicate keys, a bounded size), and jsonargparse's errors condensed
to one line that names the field and what is allowed. Every command's parser (fitquad.commands.parsing) uses both.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

_NESTED = re.compile(
    r"Problem with given class_path '(?P<class>[^']+)':\n(?P<inner>.*?)(?=\n    - |\n  Given value|\Z)", re.S
)


_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)$', re.DOTALL)


_TYPE_NAMES = {
    "<class 'int'>": "an integer",
    "<class 'float'>": "a number",
    "<class 'bool'>": "true or false",
    "<class 'list'>": "a list, [a, b, ...]",
}


def one_line(message: str, command: str = "fitquad fit") -> str:
    """jsonargparse's error message as one line that names the field and what is allowed; an unknown option's points
    to `<command> --help`."""
    message = message.strip()
    if message.startswith("Unexpected config:"):
        return "--config must be a YAML file of `section: {option: value}` mappings, e.g. configs/lesson3.yaml"
    if message.startswith("Problems parsing config:"):
        return "--config is not valid YAML: " + " ".join(message.removeprefix("Problems parsing config:").split())
    group = re.match(r"Group '([^']+)' does not accept option '([^']+)'", message)  # a key of a section of a config
    if group:
        return f"{group[1]}.{group[2]} is not an option (`{command} --help` lists the options)"
    if message.startswith("unrecognized arguments") or "does not accept option" in message:
        message, note = " ".join(message.split()), f" (`{command} --help` lists the options)"
        return message if message.endswith("lists the options)") else message + note
    if message.endswith("expected one argument"):  # argparse reads a value that starts with - as an option
        return f"{message}: give it after the option, and a value that starts with - after '=' (--model.lr=-inf)"
    if message.startswith("the following arguments are required") and "--help" not in message:
        return f"{message}: give them on the command line or in a --config file (`{command} --help` lists them)"
    unknown = re.match(r"Option '([^']+)' is not accepted$", message)  # a key of the command's own config file
    if unknown:
        return f"{unknown[1]} is not an option (`{command} --help` lists the options)"
    match = _PARSER_KEY.match(message)
    return " ".join(message.split()) if match is None else _about_a_key(match["key"], match["rest"], command)


def _about_a_key(key: str, rest: str, command: str) -> str:
    """jsonargparse's error about one key (`Parser key "<key>": <rest>`) as one line."""
    if key == "config":  # the file given to --config: missing, or not a file
        return "--config: " + " ".join(rest.split())
    unloadable = re.match(r"Unable to load config '([^']*)'", rest)
    if unloadable:  # `--data X`: X read as a YAML file of the section's options
        given = unloadable[1]
        what = "is not a YAML mapping of them" if Path(given).is_file() else "is no such file"
        return (
            f"--{key} takes a YAML file of {key}'s options, and {given!r} {what}: give them one by one as "
            f"--{key}.<option> (`{command} --help` lists them)"
        )
    not_a_mapping = re.match(r"\s*Expected a dot import path string: (.*)", rest)
    if not_a_mapping:  # a list of a dataclass's options (compare's settings) given a bare word
        return f"{key} must list mappings of options, e.g. [{{name: plain, momentum: 0.9}}], got {not_a_mapping[1]}"
    nested = _NESTED.search(rest)
    if nested:
        return _about_a_class(key, nested["class"], textwrap.dedent(nested["inner"]).strip(), command)
    given = re.search(r"(?:Got value|Given value): (.*)", rest)
    got = f", got {given[1].strip()}" if given else ""
    allowed = rest.split("Errors:")[0]  # the type's subtypes, before each one's error repeats them
    literals = re.findall(r"Literal\[(.*?)\]", allowed)
    if literals:  # every name of every Literal in a union (trainer.precision has three), once each
        names = dict.fromkeys(name.strip(" '") for literal in literals for name in literal.split(","))
        null = " or null" if "NoneType" in allowed else ""
        return f"{key} must be one of {', '.join(names)}{null}{got}"
    subtypes = re.search(r"Subtypes: \[(.*)\]", rest)
    if subtypes:
        names = [_TYPE_NAMES.get(t.strip(), _class_name(t.strip())) for t in subtypes[1].split(", ")]
        allowed = " or ".join("null" if name == "<class 'NoneType'>" else name for name in names)
        return f"{key} must be {allowed}{got}"
    expected = re.search(r"Expected a (<class '\w+'>)", rest)
    if expected and expected[1] in _TYPE_NAMES:
        return f"{key} must be {_TYPE_NAMES[expected[1]]}{got}"
    return f"{key}: " + " ".join(rest.split())


def _about_a_class(key: str, class_path: str, inner: str, command: str) -> str:
    """An option of a class chosen by class_path (model.class_path): the option's own error, named in full."""
    option = re.match(r"Option '([^']+)' is not accepted", inner)
    if option:
        name = class_path.rsplit(".", 1)[-1]
        return f"{key}.{option[1]} is not an option of {name} (`{command} --{key}.help {name}` lists them)"
    if _PARSER_KEY.match(inner) is None:  # the class itself cannot be had: an unknown module or name
        reason = " ".join(inner.split())
        return f"{key}.class_path {class_path} cannot be used: {reason} (`{command} --help` lists the classes it takes)"
    return f"{key}.{one_line(inner, command)}"


def _class_name(subtype: str) -> str:
    """A class in jsonargparse's words, <class 'a.b.Name'>, as "Name (or a subclass)"; any other text as it is."""
    match = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>", subtype)
    return subtype if match is None or match[1] == "NoneType" else f"{match[1]} (or a subclass)"


# A config expands to at most this many YAML nodes (aliases counted as often as they are used): configs are
# tens of lines, and a few lines of nested aliases (a "billion laughs") would otherwise expand to gigabytes.
MAX_CONFIG_NODES = 100_000


class ConfigYAMLError(yaml.YAMLError):
    """A YAML config that parses but cannot mean what its author wrote."""


def strict_yaml(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """jsonargparse's YAML loader, after two checks PyYAML does not make: no key twice in one mapping
    (PyYAML keeps the last one silently), and no alias expansion beyond MAX_CONFIG_NODES."""

    def checked_load(text: str) -> Any:
        root = yaml.compose(text, Loader=yaml.SafeLoader) if isinstance(text, str) else None
        if root is not None:
            _check_nodes(root)
        return load(text)

    return checked_load


def _check_nodes(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        # Expanded size, memoised by identity: an alias is the same node object as its anchor.
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a cycle counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        line = key.start_mark.line + 1
                        raise ConfigYAMLError(f"key {key.value!r} appears twice in one mapping (line {line})")
                    seen.add(key.value)
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        if total > MAX_CONFIG_NODES:
            raise ConfigYAMLError(f"it expands to more than {MAX_CONFIG_NODES:,} values (nested aliases?)")
        sizes[id(node)] = total
        return total

    size(root)
