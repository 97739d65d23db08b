"""The loading thread's GIL interval (backup_restore.background): lowered while any restore
loads in the process, and put back as it was once the last one ends, however they overlap."""
import sys

import pytest

from backup_restore.background import SWITCH_INTERVAL, Background

pytestmark = pytest.mark.no_test_db


@pytest.fixture
def default_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


def test_overlapping_restores_put_the_process_interval_back_once_the_last_ends(default_interval):
    # given two restores in one process (two threads of a web worker), the second starting
    # while the first loads
    first = Background(raw=None)
    second = Background(raw=None)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    # when the first ends, the second still loads at the low interval
    first.close()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    # and once the second ends, the process has its own interval back, not the first's low one
    second.close()
    assert sys.getswitchinterval() == pytest.approx(default_interval)


def test_closing_a_restore_twice_does_not_end_another_s_low_interval(default_interval):
    first, second = Background(raw=None), Background(raw=None)
    first.close()
    first.close()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    second.close()
    assert sys.getswitchinterval() == pytest.approx(default_interval)
