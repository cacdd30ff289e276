"""
The consistent-hash ring: the same list gives the same ring, keys are
spread evenly, and a change of membership moves only the keys it must.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from marconi.cluster.ring import Ring, key

names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
    min_size=1,
    max_size=12,
)
clusters = st.sets(names, min_size=2, max_size=16)
keys = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20)),
    min_size=1,
    max_size=50,
)

# With 160 virtual nodes per node every node owns between half and one and a
# half times its fair share 1/N of the key space, for 2 to 16 nodes.
LOW, HIGH = 0.5, 1.5


class RingTests(SynchronousTestCase):
    @settings(deadline=None, max_examples=60)
    @given(clusters, st.randoms(use_true_random=False), keys)
    def test_orderDoesNotMatter(self, nodes, random, sample) -> None:
        """
        Two rings over the same nodes, listed in different orders, give every
        key the same owner and the same successors.
        """
        listed = sorted(nodes)
        shuffled = list(listed)
        random.shuffle(shuffled)
        one, other = Ring(listed), Ring(shuffled)
        for project, queue in sample:
            k = key(project, queue)
            self.assertEqual(one.owner(k), other.owner(k))
            self.assertEqual(one.successors(k), other.successors(k))

    @settings(deadline=None, max_examples=60)
    @given(clusters)
    def test_balance(self, nodes) -> None:
        """
        Every node owns between LOW/N and HIGH/N of the key space, and the
        shares add up to the whole.
        """
        shares = Ring(nodes).shares()
        n = len(nodes)
        self.assertAlmostEqual(sum(shares.values()), 1.0, places=9)
        for name, share in shares.items():
            self.assertGreaterEqual(share * n, LOW, name)
            self.assertLessEqual(share * n, HIGH, name)

    @settings(deadline=None, max_examples=40)
    @given(clusters, names)
    def test_addingMovesOnlyToTheNewNode(self, nodes, extra) -> None:
        """
        Adding a node moves keys only to that node, and about 1/(N+1) of
        them (at most HIGH/(N+1) of the key space): exactly the share the new
        node owns.
        """
        if extra in nodes:
            return
        before, after = Ring(nodes), Ring(nodes | {extra})
        for i in range(400):
            k = key("p", f"q{i}")
            if before.owner(k) != after.owner(k):
                self.assertEqual(after.owner(k), extra)
        self.assertLessEqual(after.shares()[extra], HIGH / (len(nodes) + 1))

    @settings(deadline=None, max_examples=40)
    @given(clusters.filter(lambda s: len(s) >= 3), st.data())
    def test_removingMovesOnlyItsKeys(self, nodes, data) -> None:
        """
        Removing a node moves only the keys it owned (about 1/N of them); each
        goes to the next node on the ring, which was its first successor.
        """
        gone = data.draw(st.sampled_from(sorted(nodes)))
        before, after = Ring(nodes), Ring(nodes - {gone})
        for i in range(400):
            k = key("project", f"queue-{i}")
            if before.owner(k) == gone:
                self.assertEqual(after.owner(k), before.successors(k)[1])
            else:
                self.assertEqual(after.owner(k), before.owner(k))
        self.assertLessEqual(before.shares()[gone], HIGH / len(nodes))

    @settings(deadline=None, max_examples=40)
    @given(clusters, keys)
    def test_successors(self, nodes, sample) -> None:
        """
        The successors of a key start with its owner and list every node
        once; asking for fewer gives a prefix.
        """
        ring = Ring(nodes)
        for project, queue in sample:
            k = key(project, queue)
            everyone = ring.successors(k)
            self.assertEqual(everyone[0], ring.owner(k))
            self.assertEqual(sorted(everyone), sorted(nodes))
            self.assertEqual(ring.successors(k, 2), everyone[:2])

    def test_emptyRing(self) -> None:
        """
        A ring needs a node.
        """
        self.assertRaises(ValueError, Ring, [])
