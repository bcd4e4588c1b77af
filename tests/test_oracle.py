"""The fuzz oracle's own rules, on fabricated replies."""

from __future__ import annotations

from tests.oracle import leaked_internals, own_words


def test_stored_texts_in_a_page_are_no_leak_but_the_services_words_are_checked() -> None:
    """A client's text that looks internal (ending in .py before its closing quote) is echoed
    data, in a GET page or an RPC page; the same marker in the service's own field is a leak."""
    assert leaked_internals(own_words(b'{"logs": ["setup.py", "x"], "message": "m"}')) == []
    assert leaked_internals(own_words(b'{"result": {"logs": ["<class x>"], "next_offset": 2}}')) == []
    assert leaked_internals(own_words(b'{"logs": [], "message": "Traceback (most recent)"}')) == [
        "Traceback"]
    assert own_words(b"Traceback (most recent call last)") == b"Traceback (most recent call last)"


def test_a_marker_the_client_sent_is_no_leak_when_quoted_back() -> None:
    """An error that names the client's own argument ``Traceback`` is no leak; the same word in a
    reply to a request without it is."""
    reply = b'{"error": {"message": "got an unexpected keyword argument \'Traceback\'"}}'
    assert leaked_internals(reply, "message", b'{"Traceback": 1}') == []
    assert leaked_internals(reply, "message", b'{"x": 1}') == ["Traceback"]
