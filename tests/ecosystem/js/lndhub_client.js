// Drives lightning-backends' lndhub backend (npm) against satflow's LndHub-compatible API.
// usage: node lndhub_client.js '<lndhub://login:password@base>' <command> [argument]
// commands: balance | addinvoice <msat> | checkpayment <payment_hash> | payinvoice <bolt11> | gettxs | getpending
// Prints one JSON line: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
'use strict';
const { prepareBackend } = require('lightning-backends');

async function main() {
	const [secret, command, argument] = process.argv.slice(2);
	const ln = prepareBackend('lndhub', { secret });
	switch (command) {
		case 'balance':
			await ln.onAuthorized(); // the backend's getBalance() does not authorize by itself
			return ln.getBalance();
		case 'addinvoice':
			return ln.addInvoice(parseInt(argument, 10), { description: 'lndhub test' });
		case 'checkpayment':
			return ln.getInvoiceStatus(argument);
		case 'payinvoice':
			return ln.payInvoice(argument);
		case 'gettxs':
			return ln.tryAuthorizedRequest('get', '/gettxs');
		case 'getpending':
			return ln.tryAuthorizedRequest('get', '/getpending');
		default:
			throw new Error(`unknown command ${command}`);
	}
}

main().then(
	result => { process.stdout.write(JSON.stringify({ ok: true, result }) + '\n'); },
	error => { process.stdout.write(JSON.stringify({ ok: false, error: error.message }) + '\n'); },
);
