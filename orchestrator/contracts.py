"""Output contracts (SPEC §11): what a step's output must satisfy before a later step may
build on it. A template's `output_contract` is null, `{"json_schema": {...}}` (a JSON
Schema, checked with `jsonschema`) or `{"regex": "..."}` (a search, not a full match, by
the `regex` engine under a time bound, so a pattern that backtracks badly fails the step
instead of hanging the worker)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import ValidationError, best_match

# A search that takes longer than this fails the step rather than hold the worker.
REGEX_SECONDS = 1.0
MAX_PATTERN = 2000
MAX_SCHEMA_CHARS = 65536
PREFIX = "output contract: "


class InvalidContract(ValueError):
    pass


def check_contract(contract: Any) -> dict[str, Any] | None:
    """`contract` as it is stored, or InvalidContract saying what is wrong with it."""
    if contract is None:
        return None
    if not isinstance(contract, dict) or len(contract) != 1 or \
            next(iter(contract)) not in ("json_schema", "regex"):
        raise InvalidContract('output_contract must be null, {"json_schema": {...}} or '
                              '{"regex": "..."}')
    if "regex" in contract:
        pattern = contract["regex"]
        if not isinstance(pattern, str) or not 1 <= len(pattern) <= MAX_PATTERN:
            raise InvalidContract(f"output_contract.regex must be a pattern of 1 to "
                                  f"{MAX_PATTERN} characters")
        try:
            regex.compile(pattern)
        except regex.error as exc:
            raise InvalidContract(f"output_contract.regex does not compile: {exc}") from None
        return contract
    schema = contract["json_schema"]
    if not isinstance(schema, dict | bool):
        raise InvalidContract("output_contract.json_schema must be a JSON Schema (an object)")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise InvalidContract(f"output_contract.json_schema is larger than {MAX_SCHEMA_CHARS} "
                              "characters")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidContract(f"output_contract.json_schema is not a valid schema: "
                              f"{exc.message}") from None
    return contract


def violation(contract: dict[str, Any] | None, output: str | None) -> str | None:
    """Why `output` breaks `contract` (an error starting `output contract:`), or None."""
    if not contract:
        return None
    text = output or ""
    if "regex" in contract:
        try:
            found = regex.search(contract["regex"], text, timeout=REGEX_SECONDS)
        except TimeoutError:
            return f"{PREFIX}the pattern took longer than {REGEX_SECONDS:g} s to search"
        return None if found else f"{PREFIX}no match for /{contract['regex']}/ in the output"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"{PREFIX}the output is not JSON ({exc})"
    schema = contract["json_schema"]
    try:
        error = best_match(_bounded(jsonschema.validators.validator_for(schema))(schema)
                           .iter_errors(value))
    except Exception as exc:  # e.g. a $ref to a document it does not hold (never fetched)
        return f"{PREFIX}the schema cannot be applied: {exc}"
    if error is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{PREFIX}{error.message}" + (f" (at {where.lstrip('.')})" if where else "")


def _search(pattern: str, text: str) -> bool | None:
    """Whether `pattern` is found in `text`; None if the search ran out of time."""
    try:
        return regex.search(pattern, text, timeout=REGEX_SECONDS) is not None
    except TimeoutError:
        return None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "string"):
        return
    found = _search(pattern, instance)
    if found is None:
        yield ValidationError(f"the pattern {pattern!r} took longer than {REGEX_SECONDS:g} s "
                              "to search")
    elif not found:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            found = _search(pattern, key)
            if found is None:
                yield ValidationError(f"the pattern {pattern!r} took longer than "
                                      f"{REGEX_SECONDS:g} s to search")
            elif found:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@cache
def _bounded(validator_class: Any) -> Any:
    """The schema's validator with `pattern` and `patternProperties` searched by the time-
    bounded engine: the standard ones use `re`, which a pattern can keep busy for ever."""
    return jsonschema.validators.extend(validator_class, {
        "pattern": _pattern, "patternProperties": _pattern_properties})


def parsed(contract: dict[str, Any] | None, output: str | None) -> Any:
    """The output's JSON value for later prompts (`steps[i].json`) when the step's
    contract is a JSON Schema; else None."""
    if not contract or "json_schema" not in contract or not output:
        return None
    try:
        return json.loads(output)
    except ValueError:
        return None
