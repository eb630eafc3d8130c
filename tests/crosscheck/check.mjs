// Reference signers and verifiers for the cross-check tests: GitHub's own
// @octokit/webhooks-methods and the Standard Webhooks reference library.
// Usage (payload is read from a file so bytes are exact):
//   node check.mjs github-sign SECRET PAYLOAD_FILE              -> prints X-Hub-Signature-256
//   node check.mjs github-verify SECRET PAYLOAD_FILE SIGNATURE  -> prints true/false
//   node check.mjs standard-sign SECRET ID UNIX_SECONDS PAYLOAD_FILE -> prints webhook-signature
//   node check.mjs standard-verify SECRET PAYLOAD_FILE ID UNIX_SECONDS SIGNATURE -> true/false
import { readFileSync } from "node:fs";
import { sign, verify } from "@octokit/webhooks-methods";
import standardwebhooks from "standardwebhooks";

const { Webhook } = standardwebhooks;
const [command, ...args] = process.argv.slice(2);
const read = (path) => readFileSync(path, "utf8");

switch (command) {
  case "github-sign": {
    const [secret, file] = args;
    console.log(await sign(secret, read(file)));
    break;
  }
  case "github-verify": {
    const [secret, file, signature] = args;
    console.log(await verify(secret, read(file), signature));
    break;
  }
  case "standard-sign": {
    const [secret, id, seconds, file] = args;
    console.log(new Webhook(secret).sign(id, new Date(Number(seconds) * 1000), read(file)));
    break;
  }
  case "standard-verify": {
    const [secret, file, id, seconds, signature] = args;
    try {
      new Webhook(secret).verify(read(file), {
        "webhook-id": id,
        "webhook-timestamp": seconds,
        "webhook-signature": signature,
      });
      console.log(true);
    } catch (error) {
      console.log(false);
      console.error(String(error));
    }
    break;
  }
  default:
    console.error(`unknown command ${command}`);
    process.exit(2);
}
