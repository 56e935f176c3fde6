//! Item 2 of issue 28: agents an owner makes in the console get no more than the resource registry and the operator allow.
//! SECURITY.md maps each case here to the attack it covers.
