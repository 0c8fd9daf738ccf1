"""The one error type bad input turns into."""


class InvalidImageError(ValueError):
    """The input cannot be read as a brain-MRI slice.

    The message is meant for a person: it says what was wrong and, where
    possible, what to do about it.
    """
