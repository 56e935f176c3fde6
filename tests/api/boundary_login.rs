//! Items 8, 10, 11, 13 of issue 28: proof-of-work login needs its grant on both channels, credential changes need a recent sign-in, unauthenticated writes are rate-limited, DPoP arithmetic cannot overflow.
//! SECURITY.md maps each case here to the attack it covers.
