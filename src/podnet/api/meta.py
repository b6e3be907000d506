"""Shared pieces of every resource: the pydantic base config, ObjectMeta and the Resource base class.

Field names on the wire are kubectl's (camelCase, e.g. clusterIP, targetPort); Python attributes are
snake_case. Models accept either spelling (populate_by_name) so code and YAML read naturally.

Parsing is deliberately separate from validation: a model only checks *shapes* (types), so that inputs
Kubernetes' own tests construct without validation (kube-proxy goldens use nodePort 3001, for example)
still load. The Kubernetes rules live in api/validation.py and run at `podnet apply`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, Strict
from pydantic.alias_generators import to_camel

# Kubernetes decodes JSON strictly: "80" is not a port, 1 is not a bool. pydantic's lax mode would
# coerce them, so every scalar that Kubernetes types as int/bool is strict.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
IntOrString = Annotated[int, Strict()] | str


class K8sModel(BaseModel):
    """Base of every nested object: camelCase aliases, unknown fields kept (and reported as warnings)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """As kubectl shows it: camelCase keys, empty and unset fields left out (Go's omitempty)."""
        return _omit_empty(self.model_dump(by_alias=True, mode="json", exclude_none=True))

    # Models that podnet fully describes warn about unknown fields, as `kubectl apply` does; models that
    # only carry what podnet uses of a larger Kubernetes type (containers, pod spec) stay quiet.
    warn_unknown: ClassVar[bool] = True

    def model_post_init(self, context: Any, /) -> None:
        if self.__pydantic_extra__ and self.warn_unknown and type(context) is UnknownFieldProbe:
            context.found = True


class UnknownFieldProbe:
    """A validation context (`model_validate(data, context=probe)`) that notes whether any model built
    from the data has an unknown field to warn about, so only such objects are walked (unknown_fields):
    walking every object of a 10k-Service manifest visited 290k models to find none."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        self.found = False


class ObjectMeta(K8sModel):
    # in the order of Kubernetes' ObjectMeta, so `get -o json` reads like kubectl's
    name: str = ""
    generate_name: str | None = None
    namespace: str | None = "default"
    uid: str | None = None
    resource_version: str | None = None
    generation: Int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    # who set which field (server-side apply's field ownership); written by the API server only
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)


class Resource(K8sModel):
    """A top-level object: apiVersion, kind, metadata. Subclasses fix API_VERSION/KIND."""

    API_VERSION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = True

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if not self.api_version:
            self.api_version = self.API_VERSION
        if not self.kind:
            self.kind = self.KIND
        if not self.NAMESPACED:
            self.metadata.namespace = None
        elif not self.metadata.namespace:
            self.metadata.namespace = "default"

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        """`Kind/namespace/name` (`Kind/name` for cluster-scoped kinds): how problems name an object."""
        if self.NAMESPACED:
            return f"{self.KIND}/{self.metadata.namespace}/{self.metadata.name}"
        return f"{self.KIND}/{self.metadata.name}"

    @property
    def kubectl_name(self) -> str:
        """`service/web`, as kubectl prints it after apply/delete."""
        return f"{self.KIND.lower()}/{self.metadata.name}"



def _omit_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "fieldsV1":  # a set of fields written as a tree whose leaves are {}: kept as it is
                out[k] = v
                continue
            v = _omit_empty(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value


@functools.cache
def _field_names(cls: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """(attribute, wire name) of a model class's fields; read once per class (pydantic's model_fields
    accessor costs ~10 us a call, and a 10k-object manifest walks 60k models)."""
    return tuple((name, info.alias or name) for name, info in cls.model_fields.items())


def unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Dotted paths of fields a model did not recognise (pydantic's extras), for kubectl-style warnings."""
    found: list[str] = []
    if isinstance(model, K8sModel) and model.warn_unknown and model.model_extra:
        found.extend(f"{path}.{k}" if path else k for k in model.model_extra)
    for name, alias in _field_names(type(model)):
        value = getattr(model, name, None)
        if not isinstance(value, BaseModel | list):
            continue
        sub = f"{path}.{alias}" if path else alias
        if isinstance(value, BaseModel):
            found.extend(unknown_fields(value, sub))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found.extend(unknown_fields(item, f"{sub}[{i}]"))
    return found
