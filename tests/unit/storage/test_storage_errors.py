"""One line per storage failure, and retries only where a retry can help."""

from __future__ import annotations

import sys

import pytest

from cnnclf.config import load_config
from cnnclf.errors import ConfigError
from cnnclf.storage import StorageError, errors, retry, urls


def _named(name: str, message: str = "") -> Exception:
    return type(name, (Exception,), {})(message)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (_named("NoCredentialsError", "Unable to locate credentials"), "no credentials"),
        (FileNotFoundError("The specified bucket does not exist"), "no such bucket"),
        (PermissionError("Access Denied"), "access denied"),
        (_named("ClientError", "InvalidAccessKeyId"), "access denied"),
        (_named("EndpointConnectionError", "Could not connect"), "could not be reached (4 tries)"),
        (FileNotFoundError("b/k"), "no such object or folder"),
    ],
)
def test_each_failure_is_one_line_naming_the_url(exc, words):
    message = str(errors.explain(exc, "s3://b/k", 4))
    assert message.startswith("s3://b/k: ") and words in message and "\n" not in message


def test_transient_failures_are_retried_with_backoff(monkeypatch):
    monkeypatch.setattr(retry, "FIRST_WAIT_S", 0)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert retry.with_retries(flaky, "s3://b/k") == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(StorageError, match=r"could not be reached \(4 tries\)"):
        retry.with_retries(lambda: calls.append(1) or flaky_forever(), "s3://b/k")
    assert len(calls) == 4


def flaky_forever():
    raise TimeoutError("timed out")


def test_a_missing_object_is_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("b/k")

    with pytest.raises(StorageError, match="no such object"):
        retry.with_retries(missing, "s3://b/k")
    assert len(calls) == 1


def test_without_the_extra_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # `import fsspec` raises ImportError
    with pytest.raises(StorageError, match=r"pip install 'cnnclf\[cloud\]'"):
        urls.filesystem("s3://b/k")


def test_storage_options_and_urls_in_the_config(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        "data:\n  train_dir: s3://b/train\n  storage_options: {profile: dev, anon: false}\n"
        "model:\n  init_from: gs://b/runs/b1\n"
    )
    config = load_config(config_file)
    assert config.data.train_dir == "s3://b/train"  # not made relative to the config's folder
    assert config.model.init_from == "gs://b/runs/b1"
    assert config.data.storage_options == {"profile": "dev", "anon": False}
    with pytest.raises(ConfigError, match=r"data\.storage_options"):
        load_config(config_file, ["data.storage_options=[1, 2]"])


def test_gs_without_any_google_credentials_is_one_line_at_once(tmp_path, monkeypatch):
    pytest.importorskip("gcsfs")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no application-default file here
    monkeypatch.setenv("GCE_METADATA_HOST", "metadata.invalid")  # no metadata server either
    with pytest.raises(StorageError) as info:
        urls.filesystem("gs://a-bucket/runs/b1")
    assert str(info.value).startswith("gs://a-bucket/runs/b1: no Google Cloud credentials found")
    assert urls._google_credentials({"token": "anon"})  # a public bucket needs none
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    assert urls._google_credentials({})
