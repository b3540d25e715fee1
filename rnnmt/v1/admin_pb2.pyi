from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadModelsResponse(_message.Message):
    __slots__ = ("loaded", "kept", "unloaded", "failed")
    LOADED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    loaded: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    kept: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    unloaded: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    failed: _containers.RepeatedCompositeFieldContainer[LoadFailure]
    def __init__(self, loaded: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., kept: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., unloaded: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[LoadFailure, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "model_version", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_version: str
    version: str
    def __init__(self, name: _Optional[str] = ..., model_version: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LoadFailure(_message.Message):
    __slots__ = ("name", "model_version", "path", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_version: str
    path: str
    error: str
    def __init__(self, name: _Optional[str] = ..., model_version: _Optional[str] = ..., path: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
