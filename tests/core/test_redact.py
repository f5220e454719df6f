"""The one redaction helper: what it masks, what it leaves alone, and the streams it guards."""

from __future__ import annotations

import io
import json
import logging

from zr4.core.redact import (
    MASK,
    RedactingStream,
    configure_logging,
    environment_secrets,
    redact,
    redact_url,
    register_secret,
)


def test_url_user_info_is_masked_in_any_text() -> None:
    text = "R2_ENDPOINT='https://me:pa55word@acct.r2.cloudflarestorage.com/videos' holds credentials"
    assert redact(text, environ={}) == (
        "R2_ENDPOINT='https://***@acct.r2.cloudflarestorage.com/videos' holds credentials"
    )
    # urllib.parse takes the last "@" of the netloc: a password holding "@" is masked whole.
    assert redact_url("http://me:p@ss@host:8188/x?y=1") == "http://***@host:8188/x?y=1"
    assert redact_url("http://host:8188/path@not-user-info") == "http://host:8188/path@not-user-info"


def test_every_secret_variable_is_masked_where_it_appears() -> None:
    env = {"HF_TOKEN": "hf_abcdefghijklmnop", "R2_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG"}
    text = "token hf_abcdefghijklmnop and key=wJalrXUtnFEMI-K7MDENG/x"
    assert redact(text, environ=env) == f"token {MASK} and key={MASK}/x"


def test_a_password_in_a_variable_is_masked_outside_its_url_too() -> None:
    env = {"HF_ENDPOINT": "https://mirror-user:Mirr0r%40pass@hub.example"}
    assert "Mirr0r@pass" in environment_secrets(env) and "Mirr0r%40pass" in environment_secrets(env)
    assert (
        redact("login refused for password Mirr0r@pass", environ=env) == f"login refused for password {MASK}"
    )


def test_credential_named_variables_are_masked_but_short_values_do_not_mangle_output() -> None:
    env = {"GITHUB_TOKEN": "ghp_0123456789abcdef", "FEATURE_TOKEN": "false", "PATH": "/usr/bin"}
    document = json.dumps({"ok": False, "error": "ghp_0123456789abcdef refused"})
    assert json.loads(redact(document, environ=env)) == {"ok": False, "error": f"{MASK} refused"}
    assert "false" not in environment_secrets(env) and "/usr/bin" not in environment_secrets(env)


def test_a_short_secret_is_masked_only_where_it_stands_alone() -> None:
    env = {"ZR4_AUTH_TOKEN": "run"}
    assert redact("token run refused by runpod", environ=env) == f"token {MASK} refused by runpod"


def test_a_registered_secret_is_masked_from_then_on() -> None:
    value = "zr4_generated-token-Xq81vT0"
    assert redact(f"token {value}", environ={}) == f"token {value}"
    register_secret(value)
    assert redact(f"token {value}", environ={}) == f"token {MASK}"


def test_the_stream_masks_every_write_and_keeps_the_terminal_questions() -> None:
    target = io.StringIO()
    stream = RedactingStream(target, ["s3cr3t-value-Z"])
    print("key s3cr3t-value-Z, url https://u:pw@host", file=stream)
    assert target.getvalue() == f"key {MASK}, url https://{MASK}@host\n"
    assert stream.isatty() is False and stream.writable()
    target.close()
    stream.flush()  # what the interpreter does at exit: no error for a closed stream


def test_a_log_handler_masks_tracebacks_too() -> None:
    target = io.StringIO()
    logger = configure_logging("zr4.test-redact", ["Sek-r3t-0001"], stream=target, prefix="test")
    try:
        raise RuntimeError("signing with Sek-r3t-0001 failed")
    except RuntimeError:
        logger.exception("upload failed for key Sek-r3t-0001")
    assert "Sek-r3t-0001" not in target.getvalue()
    assert "upload failed for key ***" in target.getvalue() and "RuntimeError: signing with *** failed" in (
        target.getvalue()
    )
    logging.getLogger("zr4.test-redact").handlers.clear()
