-- AlterTable
ALTER TABLE "OperatorSession" DROP COLUMN "expiresAt";
