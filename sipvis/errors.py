"""The one exception type for failures a user can cause (bad path, bad file, no GPU...).

The CLI turns a `SipvisError` into one line on stderr and a non-zero exit code;
library users catch it like any other exception. Programming errors stay
ordinary exceptions so they keep their traceback.
"""


class SipvisError(Exception):
    """A failure caused by the user's input or environment; its message is one readable line."""
