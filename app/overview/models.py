"""The counters behind the overview: one row per (dimension, bucket), kept by app/overview/stats.py."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db


class UserCount(db.Model):
    """How many users fall in one bucket: live users by status, role, sign-up day and sign-in day,
    and the number of deleted users (dimension `deleted`, bucket `all`).

    Days are UTC dates as text (YYYY-MM-DD), so they sort and range-scan in order. A missing row
    means zero; a row may hold zero after its last user left the bucket.
    """

    __tablename__ = "user_counts"

    dimension: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    bucket: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    n: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<UserCount {self.dimension}:{self.bucket} = {self.n}>"
