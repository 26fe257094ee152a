"""Issue 17, class 2, through real PAM: a module that prints the password
back (pam_exec with ``expose_authtok stdout``, its script echoing the
password raw, quoted, inside a "server said" message and cut at 40
characters) as PAM info messages.  With generated secrets, no form of the
password reaches any sink: the module's messages are counted
(``backend-messages=N``), never kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

import nxauth
from tests.support import pam as pam_servers
from tests.support.leaks import Planted, assert_no_secret, login_in_every_sink, secrets
from tests.support.pam import PamWrapper, Services, nss_users

pam_wrapper = pam_servers.pam_wrapper


def _login(
    pam_wrapper: PamWrapper, tmp_path: Path, user: str, password: str
) -> tuple[list[str], list[nxauth.AuthEvent]]:
    config = {
        "backends": {"pam": {"service": Services.LEAKY, "library": pam_wrapper.library}},
        "auth": [{"use": "pam"}],
        "account": [{"use": "pam"}],
    }
    # pam_matrix asks again after pam_exec: the answer is the secret too
    return login_in_every_sink(tmp_path, config, user, password, conversation=lambda prompt, echo: password)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets())
def test_a_module_echoing_a_wrong_password_leaks_it_nowhere(
    pam_wrapper: PamWrapper, tmp_path_factory: Any, secret: Planted
) -> None:
    user = nss_users(1)[0]
    pam_wrapper.set_users({user: "the-right-one"})
    texts, events = _login(pam_wrapper, tmp_path_factory.mktemp("leak"), user, secret.value)
    assert events[-1].reason is not nxauth.Reason.OK
    # the module echoed it (3 lines at least, more when the secret holds line breaks): counted, not kept
    assert any(w.startswith("backend-messages=") and int(w.split("=")[1]) >= 3 for w in events[-1].detail.split())
    assert_no_secret(secret, texts)


def test_a_module_echoing_the_right_password_leaks_it_nowhere(pam_wrapper: PamWrapper, tmp_path: Path) -> None:
    user = nss_users(1)[0]
    secret = Planted(
        "9f3c0a1b2c3d4e5f-right-" + "a1b2c3d4e5f60718" * 3 + "-'\"\\x", ("9f3c0a1b2c3d4e5f", "a1b2c3d4e5f60718")
    )
    pam_wrapper.set_users({user: secret.value})
    texts, events = _login(pam_wrapper, tmp_path, user, secret.value)
    assert events[-1].reason is nxauth.Reason.OK, events[-1]
    assert events[-1].detail == "backend-messages=3"  # the module spoke: counted, not kept
    assert_no_secret(secret, texts)
