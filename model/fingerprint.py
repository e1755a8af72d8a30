"""The config base: pydantic models with a stable fingerprint.

Every component's config (``ExtractConfig``, ``CapsuleConfig``, ``TrainConfig``, ``EvalConfig``) derives
from :class:`FingerprintedConfig`. ``fingerprint()`` is a short hash over the fields that change results,
so caches and run folders can be keyed by it. A field that does not change results (batch sizes chosen for
speed, worker counts, progress bars) is declared with :func:`runtime_field`, which leaves it out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

_FINGERPRINT_KEY = "fingerprint"
T = TypeVar("T", bound="FingerprintedConfig")


def runtime_field(default: Any = ..., **kwargs: Any) -> Any:
    """A field that affects speed or logging only; it is excluded from :meth:`FingerprintedConfig.fingerprint`."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[_FINGERPRINT_KEY] = False
    return Field(default, json_schema_extra=extra, **kwargs)


def _payload(value: Any) -> Any:
    """The JSON-able value that a field contributes to a fingerprint (nested configs recurse)."""
    if isinstance(value, FingerprintedConfig):
        return value.fingerprint_payload()
    if isinstance(value, BaseModel):
        return _payload(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _payload(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_payload(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        # 1.0 and 1 are the same setting; keep the hash independent of how a YAML file spelled it.
        return int(value)
    return value


def content_fingerprint(kind: str, payload: Any, length: int = 12) -> str:
    """Short hex sha256 of ``{"kind": kind, "fields": payload}`` as canonical JSON (the rule of every fingerprint)."""
    blob = json.dumps(
        {"kind": kind, "fields": _payload(payload)}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


class FingerprintedConfig(BaseModel):
    """Base for component configs: validated, frozen, with a stable content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def fingerprint_payload(self) -> dict[str, Any]:
        """The fields that change results, as plain JSON values, keyed by name."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get(_FINGERPRINT_KEY, True) is False:
                continue
            out[name] = _payload(getattr(self, name))
        return out

    def fingerprint(self, length: int = 12) -> str:
        """A stable short hex hash of the class name and the result-changing fields.

        Stable across processes and Python versions: canonical JSON (sorted keys, no whitespace), sha256.
        """
        return content_fingerprint(type(self).__name__, self.fingerprint_payload(), length)

    def with_updates(self: T, updates: dict[str, Any]) -> T:
        """A copy with dotted-key updates applied and validated (``{"model.num_capsules": 64}``)."""
        data = self.model_dump()
        for dotted, value in updates.items():
            node = data
            parts = dotted.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise KeyError(f"{type(self).__name__} has no section {part!r} (in {dotted!r})")
                node = node[part]
            if parts[-1] not in node:
                raise KeyError(f"{type(self).__name__} has no field {dotted!r}")
            node[parts[-1]] = value
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise ValueError(plain_errors(exc)) from exc

    def to_yaml(self) -> str:
        """The full config (runtime fields included) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path) -> T:
        """Load and validate a config from a YAML file; errors name the file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read config: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(plain_errors(exc)) from exc


def plain_errors(exc: ValidationError) -> str:
    """A config's validation errors in one line of our words, each naming its dotted field and the value given:
    ``threads: input should be a valid integer, unable to parse string as an integer (got 'abc')`` — not pydantic's
    multi-line report with its documentation URL."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        message = error["msg"][:1].lower() + error["msg"][1:]
        given = f" (got {error['input']!r})" if error["type"] not in ("missing", "extra_forbidden") else ""
        parts.append(f"{field}: {message}{given}")
    return "; ".join(parts)
