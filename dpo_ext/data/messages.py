"""What a chat message is: the one check behind every conversational prompt and completion (`dpo_ext.data.rows`)
and behind telling one completion given as messages from a list of completions (`dpo_ext.scoring.inputs`)."""


def _message_problem(message) -> str | None:
    """What makes ``message`` not a chat message (a dict whose ``role`` and ``content`` are strings), or `None`.

    A `datasets.Dataset` fills a key that some message lacks with None, so a key's presence is not enough.
    """
    if not isinstance(message, dict):
        return f"expected a {{'role', 'content'}} message, got {type(message).__name__}"
    for key in ("role", "content"):
        if not isinstance(message.get(key), str):
            got = "missing" if message.get(key) is None else f"got {type(message[key]).__name__}"
            return f"a chat message needs a string '{key}' ({got})"
    return None


def messages_problem(messages: list) -> str | None:
    """What is wrong with the first bad message of a list (naming its position), or `None`."""
    for i, message in enumerate(messages):
        problem = _message_problem(message)
        if problem is not None:
            return f"message {i}: {problem}; every message must be {{'role', 'content'}} with string values"
    return None


def is_messages(value) -> bool:
    """A non-empty list of chat messages."""
    return isinstance(value, list) and len(value) > 0 and messages_problem(value) is None


def is_blank(value) -> bool:
    """A whitespace-only string, or chat messages whose contents are all whitespace."""
    if isinstance(value, str):
        return not value.strip()
    return is_messages(value) and all(not m["content"].strip() for m in value)


def assistant_message(text: str) -> list[dict]:
    """A text completion of a chat prompt, as the assistant's message."""
    return [{"role": "assistant", "content": text}]
