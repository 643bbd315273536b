"""What the forms of every area share."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField


class VersionedForm(FlaskForm):
    """Carries the version of the row it was made from: a save on an older one is a conflict."""

    version = HiddenField()

    def expected_version(self) -> int | None:
        try:
            return int(self.version.data)
        except (TypeError, ValueError, OverflowError):
            return None
