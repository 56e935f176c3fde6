//! Items 3, 9, 12 of issue 28: a kill stays killed after re-enabling, delegations are visible to their subject, removed keys stop on every node within the status interval.
//! SECURITY.md maps each case here to the attack it covers.
