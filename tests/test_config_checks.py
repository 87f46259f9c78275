"""What the config check refuses beyond the plain schema: numbers written the wrong way,
keys of another source, zoo URLs whose file name would be unusable, and folders, files
and programs missing on this machine. Every refusal names the key and the fix."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from serveprof.config_problems import text_problems, url_problem
from serveprof.errors import ServeprofError
from serveprof.models.archive import tarball_file_name
from serveprof.settings import check as check_config
from serveprof.settings import read_config_file, schema, with_defaults

REPO = Path(__file__).resolve().parents[1]
KERAS = {"source": "keras", "type": "classification", "application": "MobileNetV2"}
ZOO = {"source": "tf2_zoo", "type": "detection"}


def config_with(**overrides) -> dict:
    return {"models": {"m": dict(KERAS)}, "batch_sizes": [1, 2], **overrides}


def refusal(config: dict) -> str:
    with pytest.raises(ServeprofError) as caught:
        check_config(config)
    return str(caught.value)


def assert_refused(config: dict, key: str, *fix: str) -> str:
    message = refusal(config)
    assert key in message, message
    for words in fix:
        assert words in message, message
    return message


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def saved_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    return path


# ---------------------------------------------------------------- whole numbers


@pytest.mark.parametrize(
    "change, key, written",
    [
        ({"batch_sizes": [1, 4.0]}, "batch_sizes[1]", "write 4, not 4.0"),
        ({"models": {"m": {**KERAS, "batch_sizes": [8.0]}}}, "models.m.batch_sizes[0]", "write 8, not 8.0"),
        ({"models": {"m": {**KERAS, "input_size": [224, 224.0]}}}, "models.m.input_size[1]", "write 224, not 224.0"),
        ({"measure": {"requests": 50.0}}, "measure.requests", "write 50, not 50.0"),
        ({"measure": {"min_requests": 3.0}}, "measure.min_requests", "write 3, not 3.0"),
        ({"measure": {"warmup_requests": 10.0}}, "measure.warmup_requests", "write 10, not 10.0"),
        ({"measure": {"input": {"seed": 0.0}}}, "measure.input.seed", "write 0, not 0.0"),
        ({"measure": {"input": {"image_size": [512.0, 512]}}}, "measure.input.image_size[0]", "write 512, not 512.0"),
        ({"server": {"intra_op_threads": 2.0}}, "server.intra_op_threads", "write 2, not 2.0"),
        ({"server": {"inter_op_threads": 1.0}}, "server.inter_op_threads", "write 1, not 1.0"),
        ({"plots": {"dpi": 300.0}}, "plots.dpi", "write 300, not 300.0"),
    ],
)
def test_a_whole_number_written_with_a_decimal_point_is_refused(change, key, written):
    assert_refused(config_with(**change), f"{key}: ", "whole number is meant", written)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"batch_sizes": [1, True]}, "batch_sizes[1]"),
        ({"measure": {"requests": True}}, "measure.requests"),
        ({"measure": {"max_seconds": False}}, "measure.max_seconds"),
        ({"server": {"startup_timeout_s": True}}, "server.startup_timeout_s"),
    ],
)
def test_a_yes_no_value_is_not_a_number(change, key):
    assert_refused(config_with(**change), f"{key}: ", "is a yes/no value")


def test_numbers_as_yaml_writes_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "models: {m: {source: keras, type: classification, application: X}}\n"
        "batch_sizes: [1, 2.0, yes]\n"
        "measure: {requests: 1000.0, max_seconds: .inf, warmup_max_seconds: .nan}\n"
    )
    message = assert_refused(
        read_config_file(path),
        "batch_sizes[1]",
        "write 2, not 2.0",
        "batch_sizes[2]: True is a yes/no value",
        "measure.requests",
        "write 1000, not 1000.0",
        "measure.max_seconds: inf is not a finite number",
        "measure.warmup_max_seconds: nan is not a finite number",
    )
    assert "5 problem(s)" in message


def test_fractional_numbers_stay_valid_where_numbers_are_meant():
    config = with_defaults(
        config_with(
            measure={"max_seconds": 2.5, "warmup_max_seconds": 0, "resource_interval_s": 0.05},
            server={"startup_timeout_s": 60},
            plots={"width_in": 7.5},
        )
    )
    assert config["measure"]["max_seconds"] == 2.5 and config["plots"]["width_in"] == 7.5


# ---------------------------------------------------------------- keys of another source

OTHER_SOURCE_KEYS = [
    ("keras", KERAS, "url", "http://h/x.tar.gz", "tf2_zoo"),
    ("keras", KERAS, "sha256", None, "tf2_zoo"),
    ("keras", KERAS, "path", "models/mine", "saved_model"),
    ("keras", KERAS, "signature", "serving_default", "saved_model"),
    ("tf2_zoo", {**ZOO, "url": "http://h/x.tar.gz"}, "application", "NASNetLarge", "keras"),
    ("tf2_zoo", {**ZOO, "url": "http://h/x.tar.gz"}, "weights", "imagenet", "keras"),
    ("tf2_zoo", {**ZOO, "url": "http://h/x.tar.gz"}, "path", "models/mine", "saved_model"),
    ("tf2_zoo", {**ZOO, "url": "http://h/x.tar.gz"}, "signature", "serving_default", "saved_model"),
    ("saved_model", {"source": "saved_model", "type": "classification"}, "application", "NASNetLarge", "keras"),
    ("saved_model", {"source": "saved_model", "type": "classification"}, "weights", "random", "keras"),
    ("saved_model", {"source": "saved_model", "type": "classification"}, "url", "http://h/x.tar.gz", "tf2_zoo"),
    ("saved_model", {"source": "saved_model", "type": "classification"}, "sha256", "0" * 64, "tf2_zoo"),
]


@pytest.mark.parametrize(
    "source, definition, key, value, owner",
    OTHER_SOURCE_KEYS,
    ids=[f"{case[0]}-{case[2]}" for case in OTHER_SOURCE_KEYS],
)
def test_a_key_of_another_source_is_refused_by_check_and_schema(tmp_path, source, definition, key, value, owner):
    definition = {**definition, key: value}
    if source == "saved_model":
        definition["path"] = str(saved_model_dir(tmp_path / "sm"))
    config = config_with(models={"m": definition})
    message = assert_refused(
        config,
        f"models.m.{key}: a {source} model does not take {key} ({key} is for {owner} models)",
        f"remove {key} (a {source} model takes ",
    )
    assert "1 problem(s)" in message  # the value itself is not explained as well
    # The schema alone refuses it too, so Snakemake's own validate agrees with the check.
    assert not jsonschema.Draft202012Validator(schema()).is_valid(config)


def test_each_source_takes_its_own_keys_and_the_shared_ones(tmp_path):
    shared = {"input_size": [224, 224], "batch_sizes": [1, 4]}
    models = {
        "k": {**KERAS, "weights": "random", **shared},
        "z": {**ZOO, "url": "http://h/x.tar.gz", "sha256": "a" * 64, **shared},
        "z2": {**ZOO, "url": "http://h/y.tgz", "sha256": None},
        "s": {
            "source": "saved_model",
            "type": "detection",
            "path": str(saved_model_dir(tmp_path / "sm")),
            "signature": "serving_default",
            **shared,
        },
    }
    check_config(config_with(models=models))
    assert jsonschema.Draft202012Validator(schema()).is_valid(config_with(models=models))


def test_a_model_without_source_gets_one_problem_not_one_per_source():
    message = assert_refused(
        config_with(models={"m": {"type": "classification"}}), "models.m: 'source' is a required property"
    )
    assert "1 problem(s)" in message


# ---------------------------------------------------------------- zoo URLs

BAD_URLS = [
    ("http://h/..", "'..' is not a plain file name"),
    ("http://h/.", "'.' is not a plain file name"),
    ("http://h/models/..", "'..' is not a plain file name"),
    ("http://h/.tar.gz", "'.tar.gz' is not a plain file name"),
    ("http://h/x%20y.tar.gz", "'x%20y.tar.gz' is not a plain file name"),
    ("http://h/x.tar.gz/", "does not end in a file name"),
    ("http://h", "does not end in a file name"),
    ("http://h/", "does not end in a file name"),
    ("http://h/x.tar.gz?token=abc", "query string"),
    ("http://h/x.tar.gz?", "query string"),
    ("http://h/x.tar.gz#frag", "query string or fragment"),
    ("http://h/x.zip", "does not end in .tar.gz or .tgz"),
    ("http://h/x.tar", "does not end in .tar.gz or .tgz"),  # archive.py reads gzip only
    ("http://h/saved_model", "does not end in .tar.gz or .tgz"),
    ("http://-/x.tar.gz", "host '-' is not a valid host name"),
    ("http://-h.org/x.tar.gz", "host '-h.org'"),
    ("http://a..b/x.tar.gz", "host 'a..b'"),
    ("http://exa_mple.org/x.tar.gz", "host 'exa_mple.org'"),
    ("http://h.123/x.tar.gz", "host 'h.123'"),
    ("http://1.2.3.999/x.tar.gz", "'1.2.3.999' is not a valid IPv4 address"),
    ("http://1.2.3/x.tar.gz", "'1.2.3' is not a valid IPv4 address"),
    ("http://[::g]/x.tar.gz", "is not a valid IPv6 address"),
    ("http:///x.tar.gz", "it has no host"),
    ("http://h:99999/x.tar.gz", "port '99999' is not a number from 1 to 65535"),
    ("http://h:0/x.tar.gz", "port '0'"),
    ("http://h:/x.tar.gz", "port ''"),
    ("http://h:8o/x.tar.gz", "port '8o'"),
    ("http://user:secret@h/x.tar.gz", "credentials"),
    ("http://h/my model.tar.gz", "white space"),
    ("http://h/a\\b.tar.gz", "backslash"),
    ("ftp://h/x.tar.gz", "does not start with http:// or https://"),
    ("htp:/example.org/x.tar.gz", "does not start with http:// or https://"),
    ("HTTP://h/x.tar.gz", "does not start with http:// or https://"),
    ("http://h/" + "a" * 300 + ".tar.gz", "characters long"),
]


@pytest.mark.parametrize("url, reason", BAD_URLS, ids=[case[0][:40] for case in BAD_URLS])
def test_a_malformed_zoo_url_is_refused_with_the_reason(url, reason):
    assert_refused(
        config_with(models={"m": {**ZOO, "url": url}}),
        f"models.m.url: {url!r} is not a usable tarball URL",
        reason,
        "give the plain http(s) URL of the model's tarball",
    )


GOOD_URLS = [
    (
        "http://download.tensorflow.org/models/object_detection/tf2/20200711/ssd_mobilenet_v2_320x320_coco17_tpu-8.tar.gz",
        "ssd_mobilenet_v2_320x320_coco17_tpu-8.tar.gz",
    ),
    ("https://example.org:8443/a/b/model.tgz", "model.tgz"),
    ("http://127.0.0.1:8000/tiny_zoo.tar.gz", "tiny_zoo.tar.gz"),
    ("http://[::1]:8080/x.tar.gz", "x.tar.gz"),
    ("http://mirror.example.org./zoo/../zoo/Model+v2~1.TAR.GZ", "Model+v2~1.TAR.GZ"),
    ("http://localhost/a%20b/x.tar.gz", "x.tar.gz"),
]


@pytest.mark.parametrize("url, name", GOOD_URLS, ids=[case[1] for case in GOOD_URLS])
def test_a_plain_tarball_url_is_accepted_and_names_its_file(url, name):
    check_config(config_with(models={"m": {**ZOO, "url": url}}))
    assert tarball_file_name(url) == name


def test_the_default_config_urls_are_accepted():
    models = read_config_file(REPO / "config" / "models.yaml")
    urls = [m["url"] for m in models.values() if m["source"] == "tf2_zoo"]
    assert urls and all(url_problem(url) is None for url in urls)


# Plain pieces come up more often than hostile ones, so that a good share of the
# generated URLs pass and the property below is exercised on them.
PLAIN_PIECES = ["a", "Z", "0", "-", "_", "~", "+", ".", "x", "tar", ".gz"]
HOSTILE_PIECES = ["..", "%", "%2F", "?", "#", "@", ":", "/", "\\", " ", "[", "]", "\n", "\x00", "é"]
URL_PIECES = st.sampled_from(PLAIN_PIECES * 10 + HOSTILE_PIECES)
URLS = st.builds(
    "{}{}{}/{}{}{}".format,
    st.sampled_from(["http://", "https://"] * 4 + ["ftp://", "http:/", ""]),
    st.sampled_from(["h", "example.org", "127.0.0.1", "[::1]", "h-1.example.org."])
    | st.lists(URL_PIECES, max_size=5).map("".join),
    st.sampled_from(["", ":80", ":65535"] * 3 + [":", ":65536", ":0", ":x"]),
    st.lists(st.lists(URL_PIECES, min_size=1, max_size=3).map("".join), max_size=3).map(
        lambda dirs: "".join(d + "/" for d in dirs)
    ),
    st.lists(URL_PIECES, max_size=4).map("".join),
    st.sampled_from([".tar.gz", ".tgz", ".TGZ"] * 3 + ["", "/", ".tar", ".tar.gz/", ".tar.gz?q=1", ".tgz#f"]),
)


@settings(max_examples=500, deadline=None)
@given(url=URLS)
def test_an_accepted_url_always_gives_a_plain_file_in_the_download_folder(url):
    config = config_with(models={"m": {**ZOO, "url": url}})
    if url_problem(url) is not None:
        assert "models.m.url" in refusal(config)
        return
    check_config(config)
    name = tarball_file_name(url)  # what serveprof.models.acquire stores the tarball as
    download_dir = Path("/d/data/model/download")
    assert name == tarball_file_name(url)
    assert name not in ("", ".", "..") and not set(name) & set("/\\?#%@: ")
    assert (download_dir / name).parent == download_dir
    assert name.lower().endswith((".tar.gz", ".tgz")) and name.isascii() and name.isprintable()
    # Snakemake's validate (the plain schema) never refuses what the check accepted.
    assert jsonschema.Draft202012Validator(schema()).is_valid(config)


def test_two_urls_that_would_share_a_tarball_file_are_refused():
    models = {"a": {**ZOO, "url": "http://h/2020/x.tar.gz"}, "b": {**ZOO, "url": "http://mirror/2021/x.tar.gz"}}
    assert_refused(
        config_with(models=models),
        "models.b.url: its tarball would be stored as data/model/download/x.tar.gz",
        "the file of models.a.url (http://h/2020/x.tar.gz)",
        "remove one of the two models",
    )


def test_file_names_that_differ_only_in_case_are_one_file_on_some_systems():
    models = {"a": {**ZOO, "url": "http://h/Model.tar.gz"}, "b": {**ZOO, "url": "http://h/other/model.tar.gz"}}
    assert_refused(config_with(models=models), "models.b.url", "data/model/download/model.tar.gz", "models.a.url")


def test_two_models_may_share_one_url():
    url = "http://h/x.tar.gz"
    check_config(
        config_with(
            models={
                "small": {**ZOO, "url": url, "input_size": [320, 320]},
                "large": {**ZOO, "url": url, "input_size": [640, 640]},
            }
        )
    )


def test_acquire_refuses_a_bad_url_before_downloading(tmp_path):
    """`serveprof acquire` run by hand checks its --spec the same way: no tarball named '..'."""
    spec = {**ZOO, "url": "http://127.0.0.1:9/models/.."}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serveprof",
            "acquire",
            "--model",
            "m",
            "--spec",
            json.dumps(spec),
            "--download-dir",
            str(tmp_path / "download"),
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        "models.m.url" in result.stderr and "'..' is not a plain file name" in result.stderr and "fix:" in result.stderr
    )
    assert not (tmp_path / "download").exists() and not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------- this machine


def saved_model_config(path: str) -> dict:
    return config_with(models={"m": {"source": "saved_model", "type": "classification", "path": path}})


def test_a_saved_model_path_that_does_not_exist_is_refused(tmp_path):
    assert_refused(
        saved_model_config(str(tmp_path / "nowhere")),
        "models.m.path: SavedModel path",
        "does not exist",
        "set the model's path to a SavedModel directory",
    )


def test_a_saved_model_path_without_saved_model_pb_is_refused(tmp_path):
    (tmp_path / "empty" / "1").mkdir(parents=True)
    assert_refused(
        saved_model_config(str(tmp_path / "empty")),
        "models.m.path",
        "holds no saved_model.pb",
        "base path of numeric versions",
    )


def test_a_saved_model_directory_or_version_base_is_accepted(tmp_path, monkeypatch):
    check_config(saved_model_config(str(saved_model_dir(tmp_path / "flat"))))
    saved_model_dir(tmp_path / "versions" / "3")
    monkeypatch.chdir(tmp_path)  # a relative path is taken from the workflow directory
    check_config(saved_model_config("versions"))


def images_config(image_dir: str, kind: str = "images", model_type: str = "detection") -> dict:
    model = {**ZOO, "url": "http://h/x.tar.gz"} if model_type == "detection" else dict(KERAS)
    return config_with(models={"m": model}, measure={"input": {"kind": kind, "image_dir": image_dir}})


@pytest.mark.parametrize("kind, model_type", [("images", "classification"), ("auto", "detection")])
@pytest.mark.parametrize(
    "make, what",
    [
        (lambda folder: None, "does not exist"),
        (lambda folder: folder.write_text("not a folder"), "is a file, not a folder"),
        (lambda folder: folder.mkdir(), "holds no images"),
        (
            lambda folder: (folder.mkdir(), (folder / "notes.txt").write_text("x"), (folder / "a.png").mkdir()),
            "holds no images",
        ),
    ],
    ids=["missing", "a file", "empty", "no image files"],
)
def test_an_image_dir_that_would_be_read_must_hold_images(tmp_path, make, what, kind, model_type):
    folder = tmp_path / "photos"
    make(folder)
    assert_refused(
        images_config(str(folder), kind, model_type),
        "measure.input.image_dir",
        what,
        "null for scikit-image's sample photos",
    )


def test_an_image_dir_with_a_photo_is_accepted(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.JPG").write_bytes(b"jpeg")
    check_config(images_config(str(tmp_path / "photos")))


@pytest.mark.parametrize(
    "kind, model_type", [("random", "detection"), ("zeros", "detection"), ("auto", "classification")]
)
def test_an_image_dir_that_is_never_read_is_not_checked(tmp_path, kind, model_type):
    check_config(images_config(str(tmp_path / "nowhere"), kind, model_type))


@pytest.mark.parametrize(
    "backend, key", [("tfserving", "tfserving_path"), ("docker", "docker_path"), ("apptainer", "apptainer_path")]
)
def test_an_explicit_backend_needs_its_program(tmp_path, backend, key):
    missing = str(tmp_path / "bin" / "nothing")
    assert_refused(
        config_with(server={"backend": backend, key: missing}),
        f"server.{key}: {missing!r} is neither on PATH nor an executable file, and server.backend is {backend}",
        "or choose another server.backend" if backend != "tfserving" else "set server.backend to auto",
    )
    check_config(config_with(server={"backend": backend, key: str(executable(tmp_path / "bin" / backend))}))


def test_a_file_that_is_not_executable_is_no_program(tmp_path):
    plain = tmp_path / "tensorflow_model_server"
    plain.write_text("not a program")
    assert_refused(config_with(server={"backend": "tfserving", "tfserving_path": str(plain)}), "server.tfserving_path")


def test_backend_auto_falls_back_to_the_embedded_server(tmp_path):
    check_config(config_with(server={"backend": "auto", "tfserving_path": str(tmp_path / "no_such_server")}))
    check_config(config_with(server={"backend": "embedded", "tfserving_path": str(tmp_path / "no_such_server")}))


def test_a_named_apptainer_image_file_must_exist(tmp_path):
    apptainer = str(executable(tmp_path / "bin" / "apptainer"))
    missing = str(tmp_path / "serving.sif")
    assert_refused(
        config_with(server={"backend": "apptainer", "apptainer_path": apptainer, "image": missing}),
        f"server.image: the Apptainer image {missing}",
        "apptainer pull",
        "an existing .sif file",
    )
    Path(missing).write_bytes(b"sif")
    check_config(config_with(server={"backend": "apptainer", "apptainer_path": apptainer, "image": missing}))
    # An image reference is pulled when the job starts: nothing on disk to check.
    check_config(
        config_with(server={"backend": "apptainer", "apptainer_path": apptainer, "image": "tensorflow/serving"})
    )
    # With docker, a .sif name is an image reference like any other.
    docker = str(executable(tmp_path / "bin" / "docker"))
    check_config(config_with(server={"backend": "docker", "docker_path": docker, "image": missing + ".gone.sif"}))


def test_machine_problems_and_text_problems_are_listed_together(tmp_path):
    config = config_with(batch_sizes=[1, 2.0], server={"backend": "docker", "docker_path": str(tmp_path / "no_docker")})
    message = assert_refused(config, "batch_sizes[1]", "server.docker_path")
    assert "2 problem(s)" in message


def test_a_jobs_server_block_is_checked_for_its_text_only(tmp_path):
    """A job's `server:` block (serveprof measure --server) is checked for its text: no PATH look-ups there."""
    server = {"backend": "tfserving", "tfserving_path": str(tmp_path / "elsewhere"), "intra_op_threads": 2.0}
    problems = text_problems({"server": server}, schema())
    assert [p for p in problems if p.startswith("server")] == [
        "server.intra_op_threads: 2.0 is written as a decimal number where a whole number is meant\n"
        "    fix: write 2, not 2.0; set server.intra_op_threads to 0 (TensorFlow's default) or more"
    ]


# ---------------------------------------------------------------- serveprof check-config


def check_config_cli(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serveprof", "check-config", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_check_config_names_where_to_stage_each_zoo_tarball():
    result = check_config_cli(REPO / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert (
        "ssd_mobilenet: tf2_zoo detection, batch sizes 1, 2, 4, 8, 16, 32, "
        "tarball data/model/download/ssd_mobilenet_v2_320x320_coco17_tpu-8.tar.gz"
    ) in result.stdout
    assert "nasnet: keras classification, batch sizes 1, 2, 4, 8, 16, 32\n" in result.stdout


def test_check_config_reports_what_this_machine_lacks(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(saved_model_config(str(tmp_path / "gone"))))
    result = check_config_cli(config)
    assert result.returncode == 1
    assert "models.m.path: SavedModel path" in result.stderr and "fix: set the model's path" in result.stderr
