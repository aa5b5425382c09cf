"""The public surface: what `import sora_async` promises."""

from __future__ import annotations

import inspect
import pathlib
import types

import sora_async
import sora_async._errors
import sora_async._outcomes
import sora_async.testing


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, every name in it exists, and every public name is in it."""
    assert sora_async.__all__ == sorted(sora_async.__all__, key=lambda n: (not n.isupper(), n))
    for name in sora_async.__all__:
        assert hasattr(sora_async, name), name
    public = {
        name
        for name, value in vars(sora_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(sora_async.__all__) - {"__version__"}


def test_issue_contract_names_exist() -> None:
    """The names other code depends on are importable from the package root."""
    for name in [
        "SoraClient",
        "PollPolicy",
        "Task",
        "TaskStatus",
        "SoraError",
        "APIError",
        "AuthenticationError",
        "PermissionDeniedError",
        "TaskNotFoundError",
        "BadRequestError",
        "RateLimitError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "ResponseDecodeError",
        "TaskFailedError",
        "WaitTimeoutError",
    ]:
        assert name in sora_async.__all__, name


def test_every_error_derives_from_sora_error() -> None:
    """Each exported exception class is a SoraError, so one except clause catches all."""
    errors = [v for v in vars(sora_async).values() if inspect.isclass(v) and issubclass(v, BaseException)]
    expected = set(sora_async._errors.__all__) | set(sora_async._outcomes.__all__) - {"Outcome"}
    assert {error.__name__ for error in errors} == expected
    assert all(issubclass(error, sora_async.SoraError) for error in errors)


def test_testing_module_exports() -> None:
    """sora_async.testing exports the fake server and its helpers."""
    for name in sora_async.testing.__all__:
        assert hasattr(sora_async.testing, name), name
    assert "FakeSoraServer" in sora_async.testing.__all__


def test_py_typed_ships() -> None:
    """The package carries py.typed, so type checkers use its annotations."""
    assert (pathlib.Path(sora_async.__file__).parent / "py.typed").is_file()
