"""Checks 6 and 7: the compose file against the Compose schema, and no credential baked in."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from support.validate_context import context_of, messages
from zr4.paths import data_dir
from zr4.validate.check_compose import check_compose, compose_schema
from zr4.validate.check_secrets import check_secrets

# A token of the right shape that is not one (hf_ + 34 letters).
FAKE_HF_TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"


def compose_of(ctx: Path) -> dict:
    return yaml.safe_load((ctx / "docker-compose.yml").read_text())


def write_compose(ctx: Path, document: dict) -> None:
    (ctx / "docker-compose.yml").write_text(yaml.safe_dump(document, sort_keys=False))


# ---- check 6 ------------------------------------------------------------------------------------


def test_vendored_schema_names_its_source() -> None:
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    readme = (data_dir() / "compose-spec.README.md").read_text()
    assert "compose-spec/compose-go" in readme and "v2.13.0" in readme


def test_rendered_compose_passes(ctx: Path) -> None:
    result = check_compose(context_of(ctx))
    assert result.status == "pass", messages(result)


def test_schema_violations_are_reported_with_their_path(ctx: Path) -> None:
    document = compose_of(ctx)
    document["services"]["comfyui"]["restart"] = ["always"]
    document["services"]["comfyui"]["gpu_count"] = 1
    write_compose(ctx, document)
    report = messages(check_compose(context_of(ctx)))
    assert "at services.comfyui.restart: ['always'] is not of type 'string'" in report
    assert "at services.comfyui: unknown key 'gpu_count'" in report


def test_missing_gpu_port_and_healthcheck(ctx: Path) -> None:
    document = compose_of(ctx)
    service = document["services"]["comfyui"]
    del service["deploy"], service["healthcheck"]
    service["ports"] = ["8080:8080"]
    write_compose(ctx, document)
    report = messages(check_compose(context_of(ctx)))
    assert "services.comfyui reserves no GPU" in report
    assert "does not publish ComfyUI's port 8188" in report
    assert "services.comfyui has no healthcheck" in report


def test_named_context_missing_from_compose_build(ctx: Path) -> None:
    # The rendered Dockerfile needs none; one a user adds must reach compose's build too.
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text()
    dockerfile.write_text(
        text.replace("WORKDIR /tmp/zr4\n", "WORKDIR /tmp/zr4\nCOPY --from=zr4 src /tmp/src\n", 1)
    )
    assert "additional_contexts" not in compose_of(ctx)["services"]["comfyui"]["build"]
    report = messages(check_compose(context_of(ctx)))
    assert "services.comfyui.build lacks additional_contexts.zr4" in report


# ---- check 7 ------------------------------------------------------------------------------------


def test_rendered_context_holds_no_credentials(ctx: Path) -> None:
    result = check_secrets(context_of(ctx))
    assert result.status == "pass", messages(result)


def test_env_hf_token_in_the_dockerfile_fails(ctx: Path) -> None:
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text().replace(
        "ENV DEBIAN_FRONTEND=noninteractive\nRUN",
        f"ENV DEBIAN_FRONTEND=noninteractive\nENV HF_TOKEN={FAKE_HF_TOKEN}\nARG R2_SECRET_ACCESS_KEY\nRUN",
        1,
    )
    dockerfile.write_text(text)
    line = text.splitlines().index(f"ENV HF_TOKEN={FAKE_HF_TOKEN}") + 1
    result = check_secrets(context_of(ctx))
    report = messages(result)
    assert f"Dockerfile:{line}: ENV HF_TOKEN with a value puts a credential into the image" in report
    assert f"Dockerfile:{line + 1}: ARG R2_SECRET_ACCESS_KEY puts a credential into the image" in report
    assert f"Dockerfile:{line}: this line holds what looks like a Hugging Face token" in report
    assert FAKE_HF_TOKEN[3:] not in report  # never echo the secret


def test_credential_values_in_compose_and_runpod_template_fail(ctx: Path) -> None:
    document = compose_of(ctx)
    document["services"]["comfyui"]["environment"]["R2_SECRET_ACCESS_KEY"] = "literal-secret"
    document["services"]["comfyui"]["environment"]["HF_TOKEN"] = "${HF_TOKEN:-hf_default}"
    write_compose(ctx, document)
    template = json.loads((ctx / "runpod-template.json").read_text())
    for entry in template["env"]:
        if entry["key"] == "HF_TOKEN":
            entry["value"] = "hf_pasted_here"
    (ctx / "runpod-template.json").write_text(json.dumps(template))
    report = messages(check_secrets(context_of(ctx)))
    assert "services.comfyui.environment.R2_SECRET_ACCESS_KEY is given a value in the compose file" in report
    assert "services.comfyui.environment.HF_TOKEN is given a value" in report
    assert (
        "runpod-template.json: env HF_TOKEN has a literal value; use {{ RUNPOD_SECRET_HF_TOKEN }}" in report
    )


def test_the_auth_token_is_a_credential_everywhere(ctx: Path) -> None:
    """ZR4_AUTH_TOKEN (the auth proxy's) is passed through like any credential, and a generated
    token pasted into any file of the context is found by its shape."""
    from zr4.core.auth_settings import generate_token

    token = generate_token()
    document = compose_of(ctx)
    assert document["services"]["comfyui"]["environment"]["ZR4_AUTH_TOKEN"] == "${ZR4_AUTH_TOKEN:-}"
    assert check_secrets(context_of(ctx)).status == "pass"
    document["services"]["comfyui"]["environment"]["ZR4_AUTH_TOKEN"] = "${ZR4_AUTH_TOKEN:-my-own-token}"
    write_compose(ctx, document)
    template = json.loads((ctx / "runpod-template.json").read_text())
    entry = next(e for e in template["env"] if e["key"] == "ZR4_AUTH_TOKEN")
    assert entry["value"] == "{{ RUNPOD_SECRET_ZR4_AUTH_TOKEN }}"
    entry["value"] = "typed-into-the-template"
    (ctx / "runpod-template.json").write_text(json.dumps(template))
    (ctx / "start.sh").write_text((ctx / "start.sh").read_text() + f"# {token}\n")
    report = messages(check_secrets(context_of(ctx)))
    assert "services.comfyui.environment.ZR4_AUTH_TOKEN is given a value" in report
    assert "runpod-template.json: env ZR4_AUTH_TOKEN has a literal value" in report
    assert "start.sh" in report and "a zr4 auth token" in report
    assert token[4:] not in report


def test_credential_values_in_the_serverless_template_fail(ctx: Path) -> None:
    template = json.loads((ctx / "runpod-serverless-template.json").read_text())
    assert {"key": "ZR4_MODE", "value": "serverless"} in template["env"] and template["isServerless"] is True
    for entry in template["env"]:
        if entry["key"] == "R2_SECRET_ACCESS_KEY":
            entry["value"] = "pasted-secret"
    (ctx / "runpod-serverless-template.json").write_text(json.dumps(template))
    report = messages(check_secrets(context_of(ctx)))
    assert (
        "runpod-serverless-template.json: env R2_SECRET_ACCESS_KEY has a literal value; "
        "use {{ RUNPOD_SECRET_R2_SECRET_ACCESS_KEY }}" in report
    )


def test_a_token_in_the_compose_env_file_passes_while_dockerignore_keeps_it_out(ctx: Path) -> None:
    """docker/.env is where the how-to tells users to keep their tokens (compose reads it); the rendered
    .dockerignore keeps it out of the image, so a token there is in its place. The same file name let
    into the image by .dockerignore, or a token in any other file, still fails."""
    (ctx / ".env").write_text(f"HF_TOKEN={FAKE_HF_TOKEN}\n")
    assert check_secrets(context_of(ctx)).status == "pass"
    (ctx / ".dockerignore").write_text((ctx / ".dockerignore").read_text() + "!.env\n")
    report = messages(check_secrets(context_of(ctx)))
    assert ".env:1" in report and "a Hugging Face token" in report
    (ctx / "notes.txt").write_text(f"{FAKE_HF_TOKEN}\n")
    assert "notes.txt" in messages(check_secrets(context_of(ctx)))
