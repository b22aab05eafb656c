import pytest

from app.images import InvalidImageReference, parse_image

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("myorg/app", "docker.io", "myorg/app", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
        ("registry-1.docker.io/org/x", "docker.io", "org/x", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/team/app:v2", "localhost:5000", "team/app", "v2", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None),
        ("quay.io/org/app@" + SHA, "quay.io", "org/app", None, SHA),
        ("quay.io/org/app:1.0@" + SHA, "quay.io", "org/app", "1.0", SHA),
        ("my-reg.example.com/a__b/c-d.e:tag_1.2-x", "my-reg.example.com", "a__b/c-d.e", "tag_1.2-x", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("nginx@sha512:" + "b" * 128, "docker.io", "library/nginx", None, "sha512:" + "b" * 128),
    ],
)
def test_references_are_normalized_like_docker(text, registry, repository, tag, digest):
    ref = parse_image(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    "text, part",
    [
        ("", "empty"),
        ("Nginx", "repository"),  # uppercase first component is a host without a path
        ("docker.io/Library/nginx", "repository path component"),
        ("nginx:", "tag"),
        ("nginx: latest", "whitespace"),
        (" nginx", "whitespace"),
        ("nginx@sha256:abc", "digest"),
        ("nginx@md5:" + "a" * 32, "digest"),
        ("nginx@sha256:" + "A" * 64, "digest"),
        ("nginx:" + "x" * 129, "tag"),
        ("-bad.io/app", "registry host"),
        ("a//b", "repository path component"),
        ("app/", "repository path component"),
    ],
)
def test_invalid_references_are_refused_with_the_part_named(text, part):
    with pytest.raises(InvalidImageReference) as err:
        parse_image(text)
    assert part in str(err.value) or part in err.value.reason


def test_uppercase_single_name_is_invalid():
    with pytest.raises(InvalidImageReference):
        parse_image("Nginx")


def test_pinned_keeps_the_tag_and_replaces_any_digest():
    ref = parse_image("nginx:1.25")
    assert ref.pinned("sha256:" + "c" * 64) == "docker.io/library/nginx:1.25@sha256:" + "c" * 64
    assert parse_image("quay.io/o/a@" + SHA).pinned(SHA) == "quay.io/o/a@" + SHA


def test_pinned_refuses_anything_but_sha256():
    with pytest.raises(ValueError):
        parse_image("nginx").pinned("sha512:" + "b" * 128)


def test_registry_host_case_is_folded():
    assert parse_image("Registry.Example.COM/team/app:1").registry == "registry.example.com"


@pytest.mark.parametrize(
    "text, pinned",
    [
        ("REGISTRY/app:v1", "REGISTRY/app:v1@"),  # single-label upper-case host stays a host
        ("Registry.Example.COM/team/app:1", "Registry.Example.COM/team/app:1@"),
        ("LOCALHOST/app", "LOCALHOST/app:latest@"),
        ("nginx:1.25", "docker.io/library/nginx:1.25@"),
        ("index.docker.io/nginx", "docker.io/library/nginx:latest@"),
        ("registry-1.docker.io/org/x:2", "docker.io/org/x:2@"),  # Docker Hub by its canonical name
        ("Registry-1.Docker.IO/nginx", "docker.io/library/nginx:latest@"),
        ("[::1]:5000/app", "[::1]:5000/app:latest@"),
    ],
)
def test_pins_name_the_registry_the_runtime_reads(text, pinned):
    pin = "sha256:" + "d" * 64
    assert parse_image(text).pinned(pin) == pinned + pin


def test_upper_case_single_label_host_is_its_own_registry_not_docker_hub():
    ref = parse_image("REGISTRY/app:v1")
    assert (ref.registry, ref.repository) == ("registry", "app")
    assert parse_image("registry/app:v1").registry == "docker.io"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 64,  # an image ID, not a name (Docker refuses it too)
        "nginx:\u00e9",  # \w in Python is Unicode; tags are ASCII
        "nginx:\u0661",
        "\u212aeg.io/app",  # KELVIN SIGN lower-cases to "k": must not pass as keg.io
        "b/" + "a" * 254,  # repository path over 255 characters
        "a_b.io/app",  # Docker reads an empty domain here; Ostiary refuses
        "nginx@sha384:" + "a" * 96,  # Docker accepts sha384; pins and Notary use sha256/sha512
    ],
)
def test_references_docker_refuses_or_ostiary_deliberately_refuses(text):
    with pytest.raises(InvalidImageReference):
        parse_image(text)


def test_huge_references_are_refused_quickly_and_quoted_short():
    text = "a." * 500_000 + "io/app"
    with pytest.raises(InvalidImageReference) as err:
        parse_image(text)
    assert "longer than 1024" in str(err.value) and len(str(err.value)) < 500
