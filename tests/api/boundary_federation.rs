//! Items 5, 6, 7 of issue 28: single-use records outlive every leeway, identity assertions bind their resource and client, federation files that cannot work are refused at start.
//! SECURITY.md maps each case here to the attack it covers.
