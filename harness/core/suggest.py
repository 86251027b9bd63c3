"""'Did you mean' hints for unknown names."""
import difflib


def closest(name: str, known) -> str | None:
    """The known name `name` was most likely meant to be, if one is close."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known) -> str:
    near = closest(name, known)
    return ("" if near is None else f"did you mean '{near}'? ") + f"known: {', '.join(sorted(known))}"
