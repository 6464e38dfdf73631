"""The records this worker has dead-lettered, so that Kafka redelivering one adds no second letter.

Kafka redelivers a batch whose offsets were not committed: after a rebalance, or when the group's
coordinator was lost with its broker while the outcomes had already been published. A served request
is recognised by its event id (the serving state remembers its answer); a rejected or malformed one
is recognised here, by its place in the log, ``(topic, partition, offset)``: a redelivery is the same
record, while a dead-letter replay (``promoter dlq replay``) is a new record at a new offset and is
handled again, as it must be.

A record counts once the broker acknowledged its letter (:meth:`confirm` with its place): a letter
that may never have reached the topic is written again on redelivery. The memory is bounded and per process; a
restarted worker may write a redelivered record's letter a second time (at-least-once, as before).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from aiokafka import ConsumerRecord

RecordPlace = tuple[str, int, int]

#: Far more records than a batch holds or a redelivery reaches back: about 10 MB at the limit.
MAX_REMEMBERED = 100_000


def place_of(record: ConsumerRecord[bytes, bytes]) -> RecordPlace:
    return (record.topic, record.partition, record.offset)


class DeadLetteredRecords:
    """Places of records whose letter the broker acknowledged, the oldest forgotten first."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._confirmed: OrderedDict[RecordPlace, None] = OrderedDict()

    def confirm(self, places: Iterable[RecordPlace]) -> None:
        """The broker acknowledged the letters of the records at ``places``."""
        for place in places:
            self._confirmed[place] = None
            self._confirmed.move_to_end(place)
        while len(self._confirmed) > self._limit:
            self._confirmed.popitem(last=False)

    def already_lettered(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        return place_of(record) in self._confirmed
