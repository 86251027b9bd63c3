"""'Did you mean' hints for unknown names."""
import difflib


def did_you_mean(name: str, known) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}known: {', '.join(known)}"
