"""The clinic's operation lock: at once, or within a bounded wait."""
import threading

import pytest
from django.db import connection

from core.errors import OperationInProgressError
from core.locks import tenant_operation_lock
from core.testing import operation_lock_held_elsewhere


def test_a_lock_held_elsewhere_is_a_409_at_once_or_after_the_wait(tenant_a):
    with operation_lock_held_elsewhere("test_a"):
        for wait in (0, 0.2):
            with pytest.raises(OperationInProgressError):
                with tenant_operation_lock("test_a", wait_seconds=wait):
                    pass
        # and the caller's transaction is still usable after a timed-out wait
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def test_a_lock_released_during_the_wait_is_taken(tenant_a):
    # given another session holding the lock, released a moment later (as PostgreSQL does for a dead process)
    held, release = threading.Event(), threading.Event()

    def hold():
        with operation_lock_held_elsewhere("test_a"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    # when this session waits for it, then it gets it
    with tenant_operation_lock("test_a", wait_seconds=10):
        assert release.is_set()
    holder.join(10)
