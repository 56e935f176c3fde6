//! Item 1 of issue 28: a passport is an identity credential, not an access token.
//! SECURITY.md maps each case here to the attack it covers.
