"""
Hypothesis strategies shared by the tests.
"""

from hypothesis import strategies as st


def jsonValues(maxLeaves: int = 12) -> st.SearchStrategy:
    """
    Any JSON value (no NaN or infinity, no lone surrogates), nested in
    lists and objects of up to four items.
    """
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(), children, max_size=4)
        ),
        max_leaves=maxLeaves,
    )
