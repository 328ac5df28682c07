#!/usr/bin/env node
// Independent check of a promoter/cosign v3 bundle with Sigstore's own JS verifier.
// usage: node verify-bundle.js BUNDLE.json KEY.pub sha256:<image digest>
// Prints "verified" and exits 0 only when the DSSE signature verifies with KEY.pub (found by
// the bundle's key hint) and the in-toto statement's subject is exactly the image digest.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

function main([bundlePath, keyPath, digest]) {
  if (!bundlePath || !keyPath || !digest) throw new Error('usage: BUNDLE KEY.pub sha256:HEX');
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const publicKey = crypto.createPublicKey(fs.readFileSync(keyPath, 'utf8'));
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const expectedHint = crypto.createHash('sha256').update(spki).digest('base64');
  const emptyRoot = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
  const keyFinder = (hint) => {
    if (hint !== expectedHint) throw new Error(`bundle key hint ${hint} is not this key`);
    return { publicKey, validFor: () => true };
  };
  // Key-based signing without a transparency log (cosign --insecure-ignore-tlog): no tlog
  // entries or timestamps are required.
  const verifier = new Verifier(toTrustMaterial(emptyRoot, keyFinder),
    { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle));
  const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString());
  const [algorithm, hex] = digest.split(':');
  const subjects = statement.subject.map((s) => s.digest[algorithm]);
  if (!subjects.includes(hex)) throw new Error(`statement subject ${subjects} is not ${digest}`);
  console.log('verified');
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(`not verified: ${err.message}`);
  process.exit(1);
}
