"""The human units on a ``%%task`` line: good values parse, bad ones name their flag."""

from __future__ import annotations

import pytest

from papercrane.backend.errors import CaptureError
from papercrane.backend.units import (
    format_duration,
    format_size,
    parse_cpu,
    parse_duration,
    parse_gpu,
    parse_memory,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("2.5", 2.5),
        ("45s", 45.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("1H", 3600.0),
        (" 1h 30m ", 5400.0),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "soon", "1x", "m", "1.5.3s", "h1", "30 minutes", "1h-30m", "--5"]
)
def test_bad_duration_names_the_flag(text: str) -> None:
    with pytest.raises(CaptureError, match=r"^--timeout .* is not a duration; write it like"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "0s", "-5", "0ms", "nan", "inf", "-inf"])
def test_duration_must_be_positive_and_finite(text: str) -> None:
    with pytest.raises(CaptureError, match=rf"^--timeout '{text}' must be positive"):
        parse_duration(text)


def test_duration_error_uses_the_given_field() -> None:
    with pytest.raises(CaptureError, match=r"^--every 'never'"):
        parse_duration("never", field="--every")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000000", 1_000_000),
        ("512Mi", 512 * 2**20),
        ("4Gi", 4 * 2**30),
        ("1Ti", 2**40),
        ("64Ki", 64 * 1024),
        ("1G", 10**9),
        ("2M", 2 * 10**6),
        ("3k", 3000),
        ("3K", 3000),
        ("1T", 10**12),
        ("1.5Gi", 3 * 2**29),
        ("512MiB", 512 * 2**20),
        ("100B", 100),
        (" 4 Gi ", 4 * 2**30),
    ],
)
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "", "4gb", "4 GiGi", "-1Gi", "1e9", "Gi", "4Pi"])
def test_bad_memory_names_the_flag(text: str) -> None:
    with pytest.raises(CaptureError, match=r"^--memory .* is not a memory size; write it like"):
        parse_memory(text)


@pytest.mark.parametrize("text", ["0", "0Gi", "0.5"])
def test_memory_must_be_at_least_a_byte(text: str) -> None:
    with pytest.raises(CaptureError, match=rf"^--memory '{text}' must be positive"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "cores"),
    [("2", 2.0), ("0.5", 0.5), ("500m", 0.5), ("1500m", 1.5), (" 4 ", 4.0), ("1e1", 10.0)],
)
def test_parse_cpu(text: str, cores: float) -> None:
    assert parse_cpu(text) == pytest.approx(cores)


@pytest.mark.parametrize("text", ["two", "", "m", "2 cores", "1/2"])
def test_bad_cpu_names_the_flag(text: str) -> None:
    with pytest.raises(CaptureError, match=r"^--cpu .* is not a CPU amount; write it like"):
        parse_cpu(text)


@pytest.mark.parametrize("text", ["0", "-1", "0m", "nan", "inf", "-500m"])
def test_cpu_must_be_positive_and_finite(text: str) -> None:
    with pytest.raises(CaptureError, match=rf"^--cpu '{text}' must be positive"):
        parse_cpu(text)


@pytest.mark.parametrize(("text", "gpus"), [("0", 0), ("1", 1), ("8", 8), (" 2 ", 2)])
def test_parse_gpu(text: str, gpus: int) -> None:
    assert parse_gpu(text) == gpus


@pytest.mark.parametrize("text", ["one", "1.5", "", "1g"])
def test_bad_gpu_names_the_flag(text: str) -> None:
    with pytest.raises(CaptureError, match=r"^--gpu .* must be a whole number of GPUs"):
        parse_gpu(text)


def test_negative_gpu_is_refused() -> None:
    with pytest.raises(CaptureError, match=r"^--gpu '-1' must not be negative"):
        parse_gpu("-1")


def test_errors_are_capture_errors_with_one_line() -> None:
    for parse, text in [
        (parse_duration, "x"),
        (parse_memory, "x"),
        (parse_cpu, "x"),
        (parse_gpu, "x"),
    ]:
        with pytest.raises(CaptureError) as info:
            parse(text)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250 ms"),
        (1.5, "1.5 s"),
        (59.94, "59.9 s"),
        (90, "1m 30s"),
        (3600, "1h 00m"),
        (5400, "1h 30m"),
        (3 * 86400 + 3600, "3d 1h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * 2**20, "3.0 MiB"),
        (5 * 2**40, "5120.0 GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
